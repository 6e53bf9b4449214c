"""panning.config: a configuration checks every set field once when built, and names a refused one structurally."""
from dataclasses import FrozenInstanceError, dataclass, fields

import pytest

from panning import checks
from panning.config import SEED, Config, ConfigError, one_of, setting
from panning.train import Recipe


@dataclass(frozen=True)
class Sample(Config):
    count: int = setting(check=checks.positive_int)
    seed: int | None = setting(None, check=checks.seed)
    kind: str = setting("a", check=one_of(("a", "b")))
    note: str = "unchecked"

    def relate(self) -> None:
        if self.kind == "b" and self.count > 1:
            raise ConfigError("kind", f"'b' takes one count, got {self.count}")


@pytest.mark.parametrize("fields, field, reason", [
    (dict(count=0), "count", "expected a positive int, got 0"),
    (dict(count=1, seed="7"), "seed", "expected an int, got '7'"),
    (dict(count=1, kind="c"), "kind", "expected one of a, b, got 'c'"),
    (dict(count=2, kind="b"), "kind", "'b' takes one count, got 2"),
])
def test_a_refused_field_is_a_value_error_carrying_its_name(fields, field, reason):
    with pytest.raises(ConfigError) as refused:
        Sample(**fields)
    assert isinstance(refused.value, ValueError)
    assert (refused.value.field, refused.value.reason, str(refused.value)) == (field, reason, f"{field}: {reason}")


def test_a_shared_setting_has_one_check_and_each_configuration_its_default():
    @dataclass(frozen=True)
    class Other(Config):
        seed: int = SEED.field(7)

    assert Other().seed == 7 and Recipe(epochs=1).seed == 0
    for config in (Other, Recipe):
        assert {f.name: f for f in fields(config)}["seed"].metadata["check"] is SEED.check
    with pytest.raises(ConfigError, match=r"^seed: expected an int in \[0, 2\*\*32\), got -1$"):
        Other(seed=-1)


def test_unset_fields_are_not_checked_and_the_object_is_frozen():
    sample = Sample(count=3)
    assert (sample.seed, sample.kind, sample.note) == (None, "a", "unchecked")
    with pytest.raises(FrozenInstanceError):
        sample.count = 0
