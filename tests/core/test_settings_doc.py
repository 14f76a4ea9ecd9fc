"""README's configuration table and the Settings class say the same thing."""

import subprocess
import sys

import pytest

from app.core.config import Settings
from app.core.settings_doc import (
    END,
    README,
    START,
    differences,
    expected_defaults,
    readme_defaults,
    render_table,
    rewrite,
)


def _readme() -> str:
    return README.read_text(encoding="utf-8")


def test_readme_table_matches_the_settings_class() -> None:
    assert differences(_readme()) == [], "run `make docs` to regenerate README's table"


def test_every_setting_is_in_the_readme_with_its_default() -> None:
    stated = readme_defaults(_readme())
    assert list(stated) == [f"GENGATE_{name.upper()}" for name in Settings.model_fields]
    assert stated["GENGATE_PORT"] == "`8000`"
    assert stated["GENGATE_ALLOW_PRIVATE_URLS"] == "`false`"
    assert stated["GENGATE_DATABASE_URL"] == "none"
    assert stated["GENGATE_DEV_CREDITS"] == f"`{Settings.model_fields['dev_credits'].default}`"


def test_every_setting_has_a_description() -> None:
    undocumented = [n for n, f in Settings.model_fields.items() if not (f.description or "")]
    assert undocumented == []


def _without_row(readme: str, variable: str) -> str:
    return "".join(
        line for line in readme.splitlines(keepends=True) if f"| `{variable}` |" not in line
    )


def test_a_missing_variable_is_reported() -> None:
    assert differences(_without_row(_readme(), "GENGATE_FETCH_MAX_BYTES")) == [
        "missing from README: GENGATE_FETCH_MAX_BYTES"
    ]


def test_an_extra_variable_is_reported() -> None:
    readme = _readme().replace(END, "| `GENGATE_TURBO` | `true` | goes faster |\n" + END, 1)
    assert differences(readme) == ["in README but not a setting: GENGATE_TURBO"]


def test_a_wrong_default_is_reported() -> None:
    readme = _readme().replace("| `GENGATE_PORT` | `8000` |", "| `GENGATE_PORT` | `8080` |", 1)
    assert differences(readme) == [
        "wrong default for GENGATE_PORT: README says `8080`, Settings has `8000`"
    ]


def test_a_stale_description_is_reported() -> None:
    readme = _readme().replace("Where `gengate serve` listens", "Where it listens", 1)
    assert differences(readme) == [
        "README's settings table is out of date (descriptions or layout)"
    ]


def test_rewrite_restores_the_table_and_keeps_the_rest() -> None:
    readme = _readme()
    broken = _without_row(readme, "GENGATE_PORT").replace("`8000` |", "`1` |")
    assert rewrite(broken) == readme
    assert rewrite(readme) == readme
    assert readme.index(START) < readme.index(render_table()) < readme.index(END)


def test_markers_are_required() -> None:
    with pytest.raises(ValueError, match="settings-table"):
        differences("# a README without the table\n")


def test_expected_defaults_render_json_lists_as_operators_type_them() -> None:
    assert expected_defaults()["GENGATE_ALLOWED_HOSTS"] == '`["127.0.0.1","localhost","[::1]"]`'


def test_check_mode_of_the_module() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app.core.settings_doc", "--check"],
        cwd=README.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
