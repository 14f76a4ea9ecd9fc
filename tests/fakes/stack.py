"""Fake upstreams for trying channels by hand: OpenAI Images, ModelArk and a kie-style API
on loopback, and a channel file that routes the seed's models over them.

    python -m tests.fakes.stack --out var/fakes/channels.toml
    # prints the environment to start gengate with; Ctrl-C stops the fakes

`--kie-url URL` puts a real kie-style upstream (e.g. a second gengate) in place of the kie
fake; its key is read from the variable `--kie-key-env` names when gengate starts.
"""

from __future__ import annotations

import argparse
import threading
from contextlib import ExitStack, suppress
from pathlib import Path

from tests.fakes.kie import DEFAULT_KEY as KIE_KEY
from tests.fakes.kie import running_kie
from tests.fakes.modelark import DEFAULT_KEY as ARK_KEY
from tests.fakes.modelark import running_modelark
from tests.fakes.openai_images import running_fake

OPENAI_KEY = "sk-fake-openai-0123456789"
IMAGES = ["gpt-image-2-text-to-image", "gpt-image-2-image-to-image", "gpt-image-1"]
VIDEOS = ["seedance-2.0-text-to-video", "seedance-2.0-image-to-video"]


def channel_toml(*, openai_url: str, ark_url: str, kie_url: str, kie_key_env: str) -> str:
    """OpenAI and ModelArk first, the kie-style upstream behind both and alone for upscale."""
    upstream = {m: "seedance-1-0-pro-250528" for m in VIDEOS}
    return "\n".join(
        [
            "[[channel]]",
            'name = "openai"',
            'adapter = "openai"',
            f'base_url = "{openai_url}"',
            'api_key_env = "FAKE_OPENAI_KEY"',
            f"models = {IMAGES}".replace("'", '"'),
            'upstream_models = { "gpt-image-2-text-to-image" = "gpt-image-1", '
            '"gpt-image-2-image-to-image" = "gpt-image-1" }',
            "priority = 10",
            "",
            "[[channel]]",
            'name = "ark"',
            'adapter = "modelark"',
            f'base_url = "{ark_url}"',
            'api_key_env = "FAKE_ARK_KEY"',
            f"models = {VIDEOS}".replace("'", '"'),
            "upstream_models = { "
            + ", ".join(f'"{k}" = "{v}"' for k, v in upstream.items())
            + " }",
            "priority = 10",
            "poll_interval_seconds = 1",
            "",
            "[[channel]]",
            'name = "kie"',
            'adapter = "kie"',
            f'base_url = "{kie_url}"',
            f'api_key_env = "{kie_key_env}"',
            f"models = {[*IMAGES, 'image-upscale', *VIDEOS]}".replace("'", '"'),
            "priority = 1",
            "poll_interval_seconds = 1",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("var/fakes/channels.toml"))
    parser.add_argument("--kie-url", help="a real kie-style upstream instead of the fake")
    parser.add_argument("--kie-key-env", default="FAKE_KIE_KEY")
    args = parser.parse_args()
    with ExitStack() as stack:
        openai = stack.enter_context(running_fake(OPENAI_KEY))
        ark = stack.enter_context(running_modelark(ARK_KEY))
        kie_url = args.kie_url or stack.enter_context(running_kie(KIE_KEY)).base_url
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            channel_toml(
                openai_url=openai.base_url,
                ark_url=ark.base_url,
                kie_url=kie_url,
                kie_key_env=args.kie_key_env,
            )
        )
        print(f"fake OpenAI Images at {openai.base_url}")
        print(f"fake ModelArk at {ark.base_url}")
        print(f"kie-style upstream at {kie_url}")
        print("start gengate with:")
        print(f"  GENGATE_CHANNELS_PATH={args.out.resolve()} GENGATE_ALLOW_PRIVATE_URLS=true \\")
        kie_key = f"{args.kie_key_env}=" + (
            "<the upstream's key> " if args.kie_url else f"{KIE_KEY} "
        )
        print(
            f"  FAKE_OPENAI_KEY={OPENAI_KEY} FAKE_ARK_KEY={ARK_KEY} {kie_key}make run", flush=True
        )
        with suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
