"""User-facing errors: a pop-up with what is wrong and what to do, and no server traceback."""
from __future__ import annotations

import gradio as gr

from iqa.checkpoint import CheckpointError
from iqa.images import ImageError
from ui.render import esc


def user_error(message: str, title: str = "Error") -> gr.Error:
    """`message` is shown as HTML: escape user-supplied parts with `esc`."""
    return gr.Error(message, title=title, print_exception=False)


def message(e: Exception) -> str:
    """An exception's text for people (a KeyError's str() adds quotes around it)."""
    return str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)


def friendly(e: Exception) -> gr.Error:
    """The pop-up for a library error users can cause (bad image, unknown model, bad setting)."""
    if isinstance(e, ImageError):
        return user_error(esc(e), "Cannot use this image")
    if isinstance(e, KeyError):
        return user_error(esc(message(e)), "Unknown model")
    if isinstance(e, (CheckpointError, FileNotFoundError)):
        return user_error(esc(e), "Model problem")
    return user_error(esc(e), "Cannot run")
