"""`python -m nas.predict`: predicted latency, memory and energy of a model config on a device
(a command). `__main__`: the command line; `run`: reading HF configs and predicting."""
