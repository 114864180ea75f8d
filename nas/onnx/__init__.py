"""ONNX: graphs as a device runs them, and measuring them (shared by calibrate, export, bench).

- `export`: decode and prefill graphs with a KV cache, fp32/fp16/int8/int4;
- `moe_op`: MoE blocks as ONNX Runtime's fused MoE operator; `qmoe`: its int8/int4 form, QMoE;
- `moe`: the exportable expert kernels ExecuTorch takes;
- `check`: `model.onnx` of an export, checked against torch;
- `measure`: timing and memory of one graph in ONNX Runtime (imports nothing from the project).
"""
