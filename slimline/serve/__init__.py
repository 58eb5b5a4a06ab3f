"""`slimline serve`: an HTTP inference server for a bundle (FastAPI on uvicorn, Prometheus metrics).

Imported only by the `serve` command and the tests: `import slimline` never loads FastAPI or uvicorn.
Modules: predictor (tokenise + run the engine), batching (optional micro-batching), metrics
(the Prometheus registry), app (the ASGI app and its request validation), server (uvicorn, signals).
"""
