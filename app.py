"""Gradio entry point (also the Hugging Face Spaces `app_file`): `python app.py [--model M] [--allow-server-data]`.

Environment: IQA_APP_MODEL (checkpoint folder or preset), IQA_ALLOW_SERVER_DATA=1, IQA_RUNS_DIR,
IQA_MAX_UPLOAD_MB, GRADIO_SERVER_NAME / GRADIO_SERVER_PORT.
"""
from __future__ import annotations

import argparse

from ui.app import build_app, launch_kwargs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="DiffV2IQA Studio (Gradio app)")
    p.add_argument("--model", default=None,
                   help="checkpoint folder or preset selected at start (default: $IQA_APP_MODEL, "
                        "checkpoints/default, else the untrained lite preset)")
    p.add_argument("--allow-server-data", action="store_true", default=None,
                   help="let the Train tab read dataset folders on this machine (not only uploaded zips)")
    p.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=None, help="port (default 7860 or the next free one)")
    return p.parse_known_args(argv)[0]


if __name__ == "__main__":
    args = parse_args()
    demo = build_app(args.model, allow_server_data=args.allow_server_data)
    overrides = {k: v for k, v in (("server_name", args.host), ("server_port", args.port)) if v is not None}
    demo.launch(**launch_kwargs(**overrides))
else:  # imported (e.g. `gradio app.py` reload mode): the default app
    demo = build_app()
