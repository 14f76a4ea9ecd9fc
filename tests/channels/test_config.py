"""The channel file: loaded as written, refused with the file, channel and problem named."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.catalog.catalog import load_catalog
from app.channels.config import ChannelError, load_channels

MODELS = load_catalog().ids
T2I = "gpt-image-2-text-to-image"
LOCAL_REST = f"""
[[channel]]
name = "offline"
adapter = "local"
models = {[m for m in MODELS if m != T2I]!r}
""".replace("'", '"')


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "channels.toml"
    path.write_text(text)
    return path


def test_without_a_file_every_model_runs_locally() -> None:
    (channel,) = load_channels(None, model_ids=MODELS)
    assert channel.adapter == "local" and set(channel.models) == set(MODELS)


def test_a_file_loads_with_keys_from_the_environment(tmp_path: Path) -> None:
    path = _file(
        tmp_path,
        f"""
[[channel]]
name = "openai-main"
adapter = "openai"
base_url = "https://api.openai.example/v1"
api_key_env = "OPENAI_KEY_MAIN"
models = ["{T2I}"]
upstream_models = {{ "{T2I}" = "gpt-image-1" }}
priority = 10
weight = 3
"""
        + LOCAL_REST,
    )
    channels = load_channels(path, model_ids=MODELS, environ={"OPENAI_KEY_MAIN": "sk-secret"})
    main = channels[0]
    assert (main.name, main.adapter, main.priority, main.weight) == ("openai-main", "openai", 10, 3)
    assert main.upstream_model(T2I) == "gpt-image-1" and main.api_key == "sk-secret"
    assert "sk-secret" not in repr(channels)


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ('name = "a"\nadapter = "nope"\nmodels = ["MODEL"]', "adapter 'nope' is not one of"),
        ('name = "a"\nadapter = "local"\nmodels = ["no-such-model"]', "not in the catalog"),
        (
            'name = "a"\nadapter = "local"\nmodels = ["MODEL"]\ncolour = 1',
            "unknown key 'colour'",
        ),
        ('name = "a"\nadapter = "openai"\nmodels = ["MODEL"]\napi_key_env = "K"', "base_url"),
        (
            'name = "a"\nadapter = "openai"\nbase_url = "https://x.example"\nmodels = ["MODEL"]'
            '\napi_key_env = "MISSING_KEY"',
            "MISSING_KEY (api_key_env) is not set",
        ),
        ('name = "a"\nadapter = "local"\nmodels = ["MODEL"]\nweight = 0', "weight must be"),
        ('adapter = "local"\nmodels = ["MODEL"]', "name is required"),
        (
            'name = "a"\nadapter = "local"\nmodels = ["MODEL"]\nidempotent_submit = false',
            "idempotent_submit is only for kie channels",
        ),
        (
            'name = "a"\nadapter = "local"\nmodels = ["MODEL"]\nparams = { prompt = 3 }',
            "params must be a table of our input name",
        ),
        (
            'name = "a"\nadapter = "local"\nmodels = ["MODEL"]\nrequest_timeout_seconds = 0',
            "request_timeout_seconds must be a number of seconds above 0",
        ),
        (
            'name = "a"\nadapter = "local"\nmodels = ["MODEL"]\nwebhook_secret_env = "K"',
            "must hold a Standard Webhooks secret",
        ),
    ],
)
def test_mistakes_name_the_channel_and_the_problem(tmp_path: Path, entry: str, words: str) -> None:
    path = _file(tmp_path, "[[channel]]\n" + entry.replace("MODEL", T2I) + "\n" + LOCAL_REST)
    with pytest.raises(ChannelError) as raised:
        load_channels(path, model_ids=MODELS, environ={"K": "x"})
    assert str(path) in str(raised.value) and words in str(raised.value)


def test_every_model_must_have_a_channel(tmp_path: Path) -> None:
    path = _file(tmp_path, f'[[channel]]\nname = "only"\nadapter = "local"\nmodels = ["{T2I}"]\n')
    with pytest.raises(ChannelError, match="no channel serves"):
        load_channels(path, model_ids=MODELS)


def test_duplicate_names_and_bad_toml_are_refused(tmp_path: Path) -> None:
    twice = _file(tmp_path, LOCAL_REST + LOCAL_REST)
    with pytest.raises(ChannelError, match="duplicate name"):
        load_channels(twice, model_ids=MODELS)
    broken = _file(tmp_path, "[[channel]\n")
    with pytest.raises(ChannelError, match="not valid TOML"):
        load_channels(broken, model_ids=MODELS)


def test_the_optional_keys_load(tmp_path: Path) -> None:
    path = _file(
        tmp_path,
        f"""
[[channel]]
name = "behind"
adapter = "kie"
base_url = "https://gen.example"
api_key_env = "K"
models = ["{T2I}"]
params = {{ input_urls = "image_urls" }}
idempotent_submit = true
poll_interval_seconds = 2.5
request_timeout_seconds = 20
webhook_secret_env = "W"
"""
        + LOCAL_REST,
    )
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    (behind, _local) = load_channels(path, model_ids=MODELS, environ={"K": "x", "W": secret})
    assert behind.upstream_input({"prompt": "p", "input_urls": ["u"]}) == {
        "prompt": "p",
        "image_urls": ["u"],
    }
    assert (behind.idempotent_submit, behind.poll_interval_s, behind.request_timeout_s) == (
        True,
        2.5,
        20.0,
    )
    assert behind.webhook_secret == secret and secret not in repr(behind)
