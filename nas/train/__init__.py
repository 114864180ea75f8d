"""`python -m nas.train DIR`: train an exported architecture with the Hugging Face Trainer (a
command). `__main__`: the command line; `run`: `train(directory, settings)`."""
