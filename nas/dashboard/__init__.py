"""`python -m nas.dashboard`: browse a study in optuna-dashboard (a command; `__main__`)."""
