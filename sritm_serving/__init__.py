"""The Triton side of sritm: every Python-backend model, their shared helpers, the runtimes and the server launcher.

* ``preprocess``, ``postprocess``: the ensembles' first and last steps;
* ``network_cpu`` (OpenVINO / ONNX Runtime) and ``network_torch`` (PyTorch on a GPU): the network step;
* ``triton_util``: config parameters, error responses and input checks the four share;
* ``processing`` (numpy) and ``processing_torch`` (its torch twin): the pre/post-processing itself;
* ``runtimes``: the CPU engines; ``triton_server``: starts and stops ``tritonserver``.

The ``model_repository/*/1/model.py`` that ``build/assemble_repository.py`` writes
are two-line shims that re-export these models. Serving never imports training
code (import-linter, in ``make test``).
"""
