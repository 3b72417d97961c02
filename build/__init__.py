"""Build tools, run from the repository root as ``python -m build.<tool>``.

``export_onnx`` (the served ONNX graph), ``build_engine`` (TensorRT engines), ``assemble_repository``
(the Triton model repository), ``ship_weights`` (trained weights into ``weights/``), ``make_sample_clip``
(the demo clip) and ``gpu_check`` (speed and parity on a GPU).
"""
