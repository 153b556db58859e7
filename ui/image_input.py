"""An image input that hands the handler the uploaded *file* instead of decoding it itself.

`gr.Image` decodes uploads with Pillow before the handler runs, so a damaged or non-image file ends
in an unexplained processing error. This subclass keeps the same front end (upload, paste, webcam)
but passes the file path on, and the handler reads it with `iqa.images`, whose errors say which
file, what is wrong and what to do.
"""
from __future__ import annotations

import base64
import binascii
import tempfile
from pathlib import Path

import gradio as gr

PASTED_NAME = "pasted.png"


class ImageInput(gr.Image):
    """`gr.Image` whose handler value is a file path (str) or None."""

    is_template = True  # render with the front end of the parent, `gr.Image`

    def preprocess(self, payload) -> str | None:
        if payload is None:
            return None
        url = payload.url or ""
        if url.startswith("data:"):  # pasted or captured images may arrive inline
            try:
                data = base64.b64decode(url.split(",", 1)[1], validate=False)
            except (IndexError, binascii.Error):
                raise gr.Error("The pasted image could not be decoded. Save it as a file and upload that.",
                               print_exception=False) from None
            path = Path(tempfile.mkdtemp(dir=self.GRADIO_CACHE)) / PASTED_NAME
            path.write_bytes(data)
            return str(path)
        if payload.path is None:
            raise gr.Error("No image file arrived. Upload the image again.", print_exception=False)
        return str(payload.path)
