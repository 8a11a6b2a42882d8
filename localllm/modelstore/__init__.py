"""The models on disk: the content-addressed store, pulls from the Hugging Face Hub, GGUF headers, Modelfiles
and the shipped model library."""
