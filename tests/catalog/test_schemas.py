from app.catalog.catalog import load_catalog
from app.catalog.schemas import ModelRead


def test_model_read_serialises_in_camel_case() -> None:
    model = load_catalog().get("seedance-2.0-image-to-video")
    body = ModelRead.of(model).model_dump(mode="json", by_alias=True)
    assert list(body) == [
        "id",
        "type",
        "scene",
        "description",
        "requiredInputs",
        "inputSchema",
        "pricing",
    ]
    assert body["type"] == "video"
    assert body["requiredInputs"] == ["prompt", "image_urls"]
    # input names stay as the seed spells them
    assert "generate_audio" in body["inputSchema"]["properties"]
    assert body["pricing"] == {
        "base": 10,
        "per": "duration",
        "factors": {
            "resolution": {"480p": 0.5, "720p": 1, "1080p": 2},
            "generate_audio": {"true": 1.5},
        },
    }


def test_model_read_copies_the_schema() -> None:
    model = load_catalog().get("gpt-image-2-text-to-image")
    ModelRead.of(model).input_schema["properties"].clear()
    assert "prompt" in model.input_schema["properties"]
