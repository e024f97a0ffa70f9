"""``ssm_conformer`` with ``ssm_mode: conv`` is ESPnet's Conformer encoder, weight for weight.

Both encoders are built with the same sizes, every weight (and BatchNorm statistic) of ESPnet's
``ConformerEncoder`` is copied into ours through :data:`NAME_MAP`, and the outputs are compared in
float64. What has to be pinned for the two to be the same network:

* ours: ``ssm_mode: conv`` (the plain depthwise convolution) and ``conv_norm: batch_norm``
  (ESPnet's convolution module normalises with BatchNorm; ours defaults to a per-frame LayerNorm);
* ESPnet: ``rel_pos_type: latest`` (its default ``legacy`` builds ``LegacyRelPositionalEncoding``
  and the legacy attention; ours is the latest ``RelPositionalEncoding``), and the same
  ``macaron_style``, ``linear_units``, ``cnn_module_kernel`` (odd: ESPnet pads it "same"),
  ``attention_heads``, activation and positional encoding / attention pair on both sides;
* padding: ESPnet's convolution module convolves over padded frames (after the first pointwise
  convolution their bias makes them non-zero), so a short utterance's last frames in ESPnet's
  padded batch depend on the padding; ours zeroes padding first. So ESPnet runs each utterance
  alone, and ours the padded batch.
"""
from __future__ import annotations

import re
from typing import Dict

import pytest
import torch
from espnet2.asr.encoder.conformer_encoder import ConformerEncoder

from espnet_ssm.encoders import SSMConformerEncoder

# ESPnet's state-dict name (regex) -> ours
NAME_MAP = [
    (r"^embed\.", "embed.embed."),
    (r"\.self_attn\.", ".mixers.0.attn."),
    (r"\.norm_mha\.", ".mixer_norms.0."),
    (r"\.conv_module\.depthwise_conv\.", ".mixers.1.depthwise_conv.conv."),
    (r"\.conv_module\.", ".mixers.1."),
    (r"\.norm_conv\.", ".mixer_norms.1."),
]
# not a weight: ESPnet's BatchNorm update counter, which ours drops (checkpoint averaging)
SKIPPED = re.compile(r"\.num_batches_tracked$")

SIZES = dict(output_size=16, attention_heads=2, linear_units=24, num_blocks=2,
             cnn_module_kernel=5, dropout_rate=0.0, positional_dropout_rate=0.0)
# (ESPnet options, our options) of each compared configuration
CONFIGS = {
    "rel_pos-macaron": (dict(rel_pos_type="latest", macaron_style=True), dict(macaron_style=True)),
    "rel_pos-no_macaron": (
        dict(rel_pos_type="latest", macaron_style=False), dict(macaron_style=False)
    ),
    "abs_pos-selfattn-relu": (
        dict(pos_enc_layer_type="abs_pos", selfattention_layer_type="selfattn",
             macaron_style=True, activation_type="relu"),
        dict(pos_enc_layer_type="abs_pos", selfattention_layer_type="selfattn",
             macaron_style=True, activation_type="relu"),
    ),
}


def our_name(espnet_name: str) -> str:
    for pattern, repl in NAME_MAP:
        espnet_name = re.sub(pattern, repl, espnet_name)
    return espnet_name


def randomize_(module: torch.nn.Module, gen: torch.Generator) -> None:
    """Every floating parameter and buffer drawn afresh (LayerNorm and BatchNorm scales away from
    1, biases and BatchNorm statistics away from 0), so no part can pass by being an identity."""
    with torch.no_grad():
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=gen, dtype=t.dtype))
            else:
                t.copy_(0.3 * torch.randn(t.shape, generator=gen, dtype=t.dtype))


def copy_espnet_weights(ref: ConformerEncoder, ours: SSMConformerEncoder) -> Dict[str, str]:
    """Load ESPnet's state into ours through :data:`NAME_MAP`; return the mapping used.

    Every tensor of ours must be covered, and every ESPnet tensor must land somewhere."""
    theirs = {k: v for k, v in ref.state_dict().items() if not SKIPPED.search(k)}
    mapping = {k: our_name(k) for k in theirs}
    own = ours.state_dict()
    assert sorted(mapping.values()) == sorted(own), (
        f"unmapped ESPnet tensors {sorted(set(mapping.values()) - set(own))}, "
        f"ours without a source {sorted(set(own) - set(mapping.values()))}"
    )
    for k, v in theirs.items():
        assert own[mapping[k]].shape == v.shape, (k, mapping[k])
    ours.load_state_dict({mapping[k]: v for k, v in theirs.items()}, strict=True)
    return mapping


@pytest.mark.parametrize("config", list(CONFIGS))
def test_conv_mode_equals_espnet_conformer(config: str, seed: int):
    """With ESPnet's weights, ours on a padded batch equals ESPnet's ConformerEncoder on each
    utterance alone (float64, 1e-10), frame for frame, with the same output lengths."""
    espnet_opts, our_opts = CONFIGS[config]
    ref = ConformerEncoder(input_size=20, **SIZES, **espnet_opts).double().eval()
    ours = SSMConformerEncoder(
        20, ssm_mode="conv", conv_norm="batch_norm", **SIZES, **our_opts
    ).double().eval()
    gen = torch.Generator().manual_seed(seed)
    randomize_(ref, gen)
    copy_espnet_weights(ref, ours)

    ilens = torch.tensor([57, 40, 23, 9])
    xs = torch.randn(len(ilens), int(ilens.max()), 20, generator=gen, dtype=torch.float64)
    xs[1, 40:] = 1e3  # padding content must not matter
    with torch.no_grad():
        out, olens, _ = ours(xs, ilens)
        for b, n in enumerate(ilens.tolist()):
            want, want_len, _ = ref(xs[b : b + 1, :n], ilens[b : b + 1])
            m = int(olens[b])
            assert m == int(want_len) == want.size(1)
            torch.testing.assert_close(out[b, :m], want[0], rtol=1e-10, atol=1e-10)
            assert not out[b, m:].any()

