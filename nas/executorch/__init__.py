"""ExecuTorch: the second runtime (XNNPACK delegate), beside ONNX Runtime (`nas.onnx`).

- `runtime`: whether ExecuTorch is installed (`require`: one line saying how to install it) and
  loading a `.pte` program with a thread count;
- `quantize`: int8/int4 in the formats XNNPACK runs fast (torchao's 8-bit dynamic activations
  with 8-bit per-channel or 4-bit grouped weights);
- `export`: decode/prefill steps with an explicit KV cache, lowered to a `.pte`;
- `check`: a `.pte` against torch running the same (quantized) model, and `model.pte` of
  `nas.export runtime=executorch`;
- `measure`: timing and memory of one `.pte` (`python -m nas.executorch.measure FILE ...`).

ExecuTorch is an optional extra (`pip install -e '.[executorch]'`): nothing here imports it at
module level, so a missing install is a one-line `NasError`, never an ImportError.
"""
