"""The model library's Modelfiles (`<name>/<tag>.Modelfile`), installed as `localllm.modelstore.modelfiles`
(setup.py); localllm/modelstore/library.py reads them as package data."""
