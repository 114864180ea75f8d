"""Studies: where they live and how they are opened (shared by search, export, report, dashboard).

- `storage`: `study.storage` URLs (SQLite, journal file, PostgreSQL) as Optuna storages;
- `lock`: the single-writer lock of a SQLite study;
- `open`: create or resume a study, checking its identity;
- `lookup`: find an existing study by name, the way the search names it.
"""
