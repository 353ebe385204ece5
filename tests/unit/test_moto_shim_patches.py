"""How every shim registers a patch of moto (relayflow/local/shims/base.py): a required hook that
moto moved fails loudly, an optional one leaves moto as it is and says what is lost, and each
patch records moto's original for the shims' restore."""

from __future__ import annotations

import logging
import sys
import types
from collections.abc import Iterator

import pytest

from relayflow.local.shims import base

MODULE = "relayflow_test_fake_moto"


@pytest.fixture
def fake_moto() -> Iterator[types.ModuleType]:
    """A fresh module standing in for one of moto's; its records leave base._originals after the
    test (the real patches of a stack another test installed stay as they are)."""

    class Parent:
        def inherited(self) -> str:
            return "parent"

    class Hooked(Parent):
        def own(self) -> str:
            return "own"

    module = types.ModuleType(MODULE)
    module.Hooked = Hooked  # type: ignore[attr-defined]
    module.helper = lambda: "helper"  # type: ignore[attr-defined]
    sys.modules[MODULE] = module
    try:
        yield module
    finally:
        for key in [key for key in base._originals if key[0] == MODULE]:
            del base._originals[key]
        del sys.modules[MODULE]


def _recorded() -> dict[str, object]:
    return {
        attribute: original for (module, attribute), original in base._originals.items() if module == MODULE
    }


def test_a_required_patch_wraps_moto_original_and_records_it(fake_moto: types.ModuleType) -> None:
    own, helper = fake_moto.Hooked.own, fake_moto.helper
    base.patch_required(MODULE, "Hooked.own", lambda own: lambda self: own(self).upper())
    base.patch_required(MODULE, "helper", lambda helper: lambda: helper() + "!")
    assert fake_moto.Hooked().own() == "OWN" and fake_moto.helper() == "helper!"
    assert _recorded() == {"Hooked.own": own, "helper": helper}


@pytest.mark.parametrize(
    "attribute",
    ["Hooked.gone", "Gone.own", "gone", "Hooked.inherited"],
    ids=["attr", "class", "module", "inherited"],
)
def test_a_required_hook_moto_moved_fails_loudly_and_patches_nothing(
    fake_moto: types.ModuleType, attribute: str
) -> None:
    with pytest.raises(base.MotoIncompatibleError, match=f"{attribute} moved"):
        base.patch_required(MODULE, attribute, lambda original: original)
    assert _recorded() == {}


def test_a_required_hook_that_fails_its_check_names_the_problem(fake_moto: types.ModuleType) -> None:
    with pytest.raises(base.MotoIncompatibleError, match="own changed its signature"):
        base.patch_required(
            MODULE,
            "Hooked.own",
            lambda own: own,
            check=lambda own: False,
            problem="own changed its signature",
        )
    assert _recorded() == {}


def test_an_inherited_hook_is_patched_when_asked(fake_moto: types.ModuleType) -> None:
    base.patch_required(MODULE, "Hooked.inherited", lambda inherited: lambda self: "patched", own=False)
    assert fake_moto.Hooked().inherited() == "patched"
    assert _recorded() == {"Hooked.inherited": base._INHERITED}  # restore deletes it


def test_an_optional_hook_moto_lacks_leaves_moto_and_says_what_is_lost(
    fake_moto: types.ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="relayflow.local"):
        assert not base.patch_optional(MODULE, "gone", lambda original: original, lost="tasks are slower")
        assert not base.patch_optional("relayflow_no_such_module", "x", lambda original: original)
        assert not base.patch_optional(MODULE, "helper", lambda helper: helper, check=lambda helper: False)
    assert [record.getMessage() for record in caplog.records] == ["moto changed: tasks are slower"]
    assert _recorded() == {}
    assert base.patch_optional(MODULE, "helper", lambda helper: lambda: "patched")
    assert fake_moto.helper() == "patched"
