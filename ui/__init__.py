"""Gradio UI for DiffV2IQA Studio. Imports the `iqa` library; holds no model logic."""
