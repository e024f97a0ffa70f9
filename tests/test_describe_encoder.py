"""The encoder option reference is read from the code and stays in sync with it."""
from __future__ import annotations

import pytest
import torch
import yaml

import espnet_ssm  # noqa: F401
from espnet_ssm.bin import describe_encoder
from espnet_ssm.encoders.reference import (
    encoder_options,
    markdown_reference,
    undocumented_options,
    yaml_template,
)
from espnet_ssm.registry import our_encoders
from espnet_ssm.tasks import resolved_encoder_conf
from conftest import REPO

NAMES = sorted(our_encoders())


@pytest.mark.parametrize("name", NAMES)
def test_template_values_build_the_encoder_an_empty_conf_builds(name: str, seed: int):
    """The printed template, read back as YAML and passed key by key, builds the same network
    (parameter names, shapes and values from the same seed) with the same output."""
    conf = yaml.safe_load(yaml_template(name))["encoder_conf"]
    built = []
    for kwargs in ({}, conf):
        torch.manual_seed(seed)
        built.append(our_encoders()[name](input_size=20, **kwargs).eval())
    empty, explicit = built
    a, b = empty.state_dict(), explicit.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a)
    xs = torch.randn(2, 40, 20)
    with torch.no_grad():
        assert torch.equal(empty(xs, torch.tensor([40, 31]))[0], explicit(xs, torch.tensor([40, 31]))[0])


def test_shared_keys_have_one_meaning_and_family_defaults():
    """A key shared by families keeps the meaning its group gives it, while a family may change
    its default (d_state: ssm_conformer and mh_ssm differ)."""
    conformer = {o.name: o for o in encoder_options("ssm_conformer")}
    mh_ssm = {o.name: o for o in encoder_options("mh_ssm")}
    assert conformer["d_state"].doc == mh_ssm["d_state"].doc != ""
    assert conformer["d_state"].default != mh_ssm["d_state"].default


@pytest.mark.parametrize("name", NAMES)
def test_every_option_is_documented(name: str):
    assert undocumented_options(name) == []


@pytest.mark.parametrize("name", NAMES)
def test_config_yaml_records_what_an_empty_conf_builds(name: str, seed):
    """What the task writes into config.yaml (``resolved_encoder_conf``: the constructor's
    defaults), passed back key by key, builds the same network as an empty encoder_conf."""
    conf = resolved_encoder_conf(our_encoders()[name], {})
    assert list(conf) == [o.name for o in encoder_options(name)]  # every key, in the docs' order
    built = []
    for kwargs in ({}, conf):
        torch.manual_seed(seed)
        built.append(our_encoders()[name](input_size=20, **kwargs).eval())
    a, b = (m.state_dict() for m in built)
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_template_builds_the_encoder():
    conf = yaml.safe_load(yaml_template("ssm_conformer"))["encoder_conf"]
    conf.update(output_size=32, attention_heads=2, linear_units=32, num_blocks=1)
    encoder = our_encoders()["ssm_conformer"](input_size=20, **conf)
    assert encoder.output_size() == 32


def test_docs_file_is_up_to_date():
    path = REPO / "docs" / "encoder_options.md"
    assert path.read_text() == markdown_reference(), (
        "docs/encoder_options.md is stale: python -m espnet_ssm.bin.describe_encoder --markdown "
        "> docs/encoder_options.md"
    )


def test_cli(capsys):
    describe_encoder.main(["speech_mamba"])
    assert capsys.readouterr().out == yaml_template("speech_mamba")
    with pytest.raises(SystemExit):
        describe_encoder.main(["mh_sm"])
    assert "invalid choice" in capsys.readouterr().err
