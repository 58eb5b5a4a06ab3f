"""The results history: every run, bench and search recorded in SQLite, shipped marks, compare, regressions.

Above the pipeline (which never imports it) and below deploy: slimline.api calls `after_run` once a
report is written. Importing this package imports no SQLAlchemy or Alembic; opening a history does.
"""
