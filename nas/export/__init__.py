"""`python -m nas.export`: a trial as a Hugging Face model directory (a command).

- `__main__`: the command line and `run_export(argv)`;
- `pick`: which trials `trial=N|pareto|best:METRIC` names;
- `write`: one trial's directory (config, tokenizer, recipe, record, model.onnx);
- `card`: its model card;
- `weights`: a prune study's trained child, replayed and saved with its weights.
"""
