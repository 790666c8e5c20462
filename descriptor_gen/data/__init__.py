"""Evaluation data: image folders, CSV manifests, Hugging Face and webdataset sources, and the
dataset cards of the field's benchmark suite."""
