"""`slimline search`: an Optuna study over a search space, resumable, with a Pareto front (see engine)."""

from slimline.pipeline.search.engine import SearchRequest, SearchResult, run_search

__all__ = ["SearchRequest", "SearchResult", "run_search"]
