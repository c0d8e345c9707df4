"""The README documents every setting, so a limit cannot be added silently."""

from pydantic import BaseModel

from servers.settings import PROJECT_ROOT, BackendConfig, GatewaySettings


def environment_names(model: type[BaseModel], prefix: str) -> list[str]:
    names = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names += environment_names(annotation, f"{prefix}{name.upper()}__")
        elif name != "backends":
            names.append(f"{prefix}{name.upper()}")
    return names


def test_every_setting_is_in_the_readme_table():
    readme = (PROJECT_ROOT / "README.md").read_text()
    missing = [n for n in environment_names(GatewaySettings, "GATEWAY_") if f"`{n}`" not in readme]
    assert not missing


def test_every_backend_field_is_in_the_readme():
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert not [name for name in BackendConfig.model_fields if f"`{name}`" not in readme]
