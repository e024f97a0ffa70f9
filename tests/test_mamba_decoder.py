"""Mamba decoder (``decoder: mamba``) and the release-size Speech-Mamba (``mamba_init``).

- teacher-forced ``forward`` == token-by-token ``score`` / ``batch_score`` (float32 and float64);
- ``batch_score`` == ``score`` per hypothesis; states advance by the newest token only;
- the streaming recognisers' attention rescoring gives the same log-likelihoods as scoring;
- the tiny config builds through ESPnet's ``ASRTask`` and a few training steps lower the loss;
- ESPnet's beam search decodes a packed model in a fresh process, as in this one;
- ``mamba_init: release``: A_log and the weights drawn as Xavier-normal, dt_proj's bias at
  PyTorch's default, kept through ESPnet's ``--init``.

Every test is seeded by conftest (the seed is printed on failure; TEST_SEED replays it).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest
import torch

import espnet_ssm  # noqa: F401  (registers the decoder)
from conftest import REPO, TinyASRData, make_tiny_asr_data
from espnet_ssm.decoders import MambaDecoder
from espnet_ssm.encoders import SpeechMambaEncoder
from espnet_ssm.layers.mamba import MambaMixer
from espnet_ssm.layers.mamba_release_init import ReleaseInitMambaMixer
from espnet_ssm.streaming.rescoring import attention_log_likelihoods
from espnet_ssm.tasks import SSMASRTask

TUNING = REPO / "conf" / "tuning"
TINY = TUNING / "train_asr_speech_mamba_tiny.yaml"
VOCAB = 11
TOL = {torch.float32: 1e-4, torch.float64: 1e-10}


def small_decoder(dtype=torch.float64, **kw) -> MambaDecoder:
    conf = dict(attention_heads=2, num_blocks=2, d_state=8, dropout_rate=0.1)
    conf.update(kw)
    return MambaDecoder(VOCAB, 16, **conf).to(dtype).eval()


def padded_batch(dtype, lengths: List[int], frames: List[int]):
    hs = torch.randn(len(frames), max(frames), 16, dtype=dtype)
    ys = torch.randint(0, VOCAB, (len(lengths), max(lengths)))
    return hs, torch.tensor(frames), ys, torch.tensor(lengths)


# ----------------------------------------------------------------------------- scoring
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_forward_equals_incremental_scoring(dtype):
    dec = small_decoder(dtype)
    hs, hlens, ys, ylens = padded_batch(dtype, [6, 3, 5], [9, 4, 7])
    with torch.no_grad():
        logp = dec(hs, hlens, ys, ylens)[0].log_softmax(-1)
        for b in range(len(ylens)):
            mem = hs[b, : int(hlens[b])]
            state = dec.init_state(mem)
            for u in range(int(ylens[b])):
                step, state = dec.score(ys[b, : u + 1], state, mem)
                torch.testing.assert_close(step, logp[b, u], atol=TOL[dtype], rtol=0)
            # ESPnet's batch search: one hypothesis per row, states from the previous call
            states = [None]
            for u in range(int(ylens[b])):
                step, states = dec.batch_score(ys[b : b + 1, : u + 1], states, mem[None])
                torch.testing.assert_close(step[0], logp[b, u], atol=TOL[dtype], rtol=0)


def test_batch_score_equals_score_per_hypothesis():
    dec = small_decoder(torch.float64)
    mem = torch.randn(8, 16, dtype=torch.float64)
    prefixes = torch.randint(0, VOCAB, (4, 5))
    states, singles = [None] * 4, [None] * 4
    with torch.no_grad():
        for u in range(5):
            batch, states = dec.batch_score(prefixes[:, : u + 1], states, mem.expand(4, -1, -1))
            for i in range(4):
                one, singles[i] = dec.score(prefixes[i, : u + 1], singles[i], mem)
                torch.testing.assert_close(batch[i], one, atol=1e-12, rtol=0)
                for a, b in zip(states[i], singles[i]):
                    torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
        # no states: the whole prefix at once gives the same scores and states
        whole, whole_states = dec.batch_score(prefixes, [None] * 4, mem.expand(4, -1, -1))
        (hs_logp, hidden), _ = dec.batch_score(prefixes, [None] * 4, mem.expand(4, -1, -1),
                                               return_hs=True)
    torch.testing.assert_close(whole, batch, atol=1e-12, rtol=0)
    torch.testing.assert_close(hs_logp, batch, atol=1e-12, rtol=0)
    assert hidden.shape == (4, 16)
    for a, b in zip(whole_states, states):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, atol=1e-12, rtol=0)
    # a state is the conv and SSM state of each of the 2 x num_blocks mixers
    mixer = dec.decoders[0].mamba_in.mixer
    assert [tuple(t.shape) for t in states[0][:2]] == [
        (mixer.d_inner, mixer.d_conv), (mixer.d_inner, mixer.d_state)
    ]
    assert len(states[0]) == 2 * 2 * len(dec.decoders)


def test_scoring_embeds_only_the_newest_token():
    """No recomputation of the prefix: each call after the first embeds one token per row."""
    dec = small_decoder(torch.float32)
    seen: List[int] = []
    dec.embed.register_forward_hook(lambda m, inp, out: seen.append(inp[0].size(1)))
    mem = torch.randn(2, 6, 16)
    ys = torch.randint(0, VOCAB, (2, 7))
    states = [None, None]
    with torch.no_grad():
        for u in range(7):
            _, states = dec.batch_score(ys[:, : u + 1], states, mem)
    assert seen == [1] * 7
    with pytest.raises(ValueError, match="every hypothesis has a state or none"):
        dec.batch_score(ys[:, :2], [states[0], None], mem)


def test_streaming_attention_rescoring_uses_forward():
    dec = small_decoder(torch.float64)
    enc = torch.randn(1, 9, 16, dtype=torch.float64)
    sos = eos = VOCAB - 1
    hyps = [[1, 2, 3], [4], [], [5, 6, 7, 8, 2]]
    with torch.no_grad():
        got = attention_log_likelihoods(dec, enc, hyps, sos, eos)
        for hyp, value in zip(hyps, got):
            seq = [sos] + hyp
            state, total = None, 0.0
            for u, nxt in enumerate(hyp + [eos]):
                logp, state = dec.score(torch.tensor(seq[: u + 1]), state, enc[0])
                total += float(logp[nxt])
            assert value == pytest.approx(total, abs=1e-9)


def test_rejects_bad_options():
    with pytest.raises(ValueError, match="attention_heads=3"):
        MambaDecoder(VOCAB, 16, attention_heads=3)
    with pytest.raises(ValueError, match="mamba_init='xavier'"):
        MambaDecoder(VOCAB, 16, mamba_init="xavier")
    with pytest.raises(ValueError, match="norm_type"):
        MambaDecoder(VOCAB, 16, norm_type="batch_norm")


# ----------------------------------------------------------------------------- training
def build_tiny(token_list: Path, *extra: str):
    args = SSMASRTask.get_parser().parse_args(
        ["--config", str(TINY), "--token_list", str(token_list), "--output_dir", "unused", *extra]
    )
    return SSMASRTask.build_model(args)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> TinyASRData:
    return make_tiny_asr_data(tmp_path_factory.mktemp("mamba_dec_data"), n_utts=4)


def test_tiny_config_trains(data):
    """ESPnet's ASR task builds the tiny config with our decoder; Adam steps lower the loss."""
    from espnet2.tasks.asr import decoder_choices

    assert decoder_choices.get_class("mamba") is MambaDecoder
    model = build_tiny(data.token_list)
    assert isinstance(model.decoder, MambaDecoder) and len(model.decoder.decoders) == 1
    g = torch.Generator().manual_seed(1)
    n, samples = 3, 9600
    speech = torch.randn(n, samples, generator=g) * 0.1
    text = torch.randint(3, 11, (n, 6), generator=g)
    batch = dict(speech=speech, speech_lengths=torch.tensor([samples, 8000, 7000]),
                 text=text, text_lengths=torch.tensor([6, 4, 5]))
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses, att = [], []
    for _ in range(8):
        loss, stats, _ = model(**batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        att.append(float(stats["loss_att"]))
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.8 * losses[0], losses
    assert att[-1] < att[0], att


# ----------------------------------------------------------------------------- decoding
def test_packed_model_decodes_in_fresh_process(data, tmp_path):
    """Untrained tiny model, packed as run.sh's stage 14 does; ESPnet's Speech2Text (batch beam
    search with our decoder as a full scorer) decodes it in a fresh process as it does here."""
    import soundfile as sf
    from espnet2.bin.asr_inference import Speech2Text
    from espnet2.bin.pack import main as pack
    from espnet2.main_funcs.pack_funcs import unpack
    from espnet.nets.batch_beam_search import BatchBeamSearch

    exp = tmp_path / "exp"
    SSMASRTask.main(cmd=[
        "--config", str(TINY), "--dry_run", "true", "--iterator_type", "none",
        "--output_dir", str(exp), "--token_list", str(data.token_list), "--token_type", "char",
    ])
    model = build_tiny(data.token_list)
    torch.save(model.state_dict(), exp / "model.pth")
    cwd = os.getcwd()
    os.chdir(tmp_path)  # pack stores paths relative to the working directory
    try:
        pack(["asr", "--asr_train_config", "exp/config.yaml", "--asr_model_file",
              "exp/model.pth", "--outpath", "packed.zip"])
    finally:
        os.chdir(cwd)
    wav = data.wav_scp.read_text().split()[1]
    search = dict(beam_size=3, ctc_weight=0.3, maxlenratio=0.5)
    code = f"""
import json, soundfile, torch
from espnet2.bin.asr_inference import Speech2Text
from espnet2.main_funcs.pack_funcs import unpack
files = unpack({str(tmp_path / 'packed.zip')!r}, {str(tmp_path / 'fresh')!r})
s2t = Speech2Text(**files, **{search!r})
wav, _ = soundfile.read({wav!r}, dtype="float32")
text, tokens, ids, hyp = s2t(torch.from_numpy(wav))[0]
print(json.dumps({{"ids": ids, "decoder": type(s2t.asr_model.decoder).__name__,
    "search": type(s2t.beam_search).__name__}}))
"""
    # no `import espnet_ssm` in the child: the installed start-up hook registers the decoder
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["decoder"] == "MambaDecoder" and got["search"] == "BatchBeamSearch"
    s2t = Speech2Text(**unpack(str(tmp_path / "packed.zip"), str(tmp_path / "here")), **search)
    assert isinstance(s2t.beam_search, BatchBeamSearch)
    here = s2t(torch.from_numpy(sf.read(wav, dtype="float32")[0]))[0][2]
    assert got["ids"] == here


# ----------------------------------------------------------------------------- release init
def mixers(module: torch.nn.Module) -> List[MambaMixer]:
    return [m for m in module.modules() if isinstance(m, MambaMixer)]


def assert_release_init(module: torch.nn.Module) -> None:
    found = mixers(module)
    assert found and all(type(m) is ReleaseInitMambaMixer for m in found)
    for m in found:
        E, N = m.A_log.shape
        a = m.A_log.detach().double()
        # Mamba's A_log[c, n] = log(n + 1); Xavier-normal: mean 0, std sqrt(2 / (E + N))
        assert not torch.allclose(a, torch.log(torch.arange(1, N + 1.0, dtype=a.dtype)).expand(E, N))
        std = math.sqrt(2.0 / (E + N))
        assert abs(float(a.mean())) < 4 * std / math.sqrt(a.numel())
        assert float(a.std()) == pytest.approx(std, rel=0.1)
        w = m.in_proj.weight.detach().double()
        assert float(w.std()) == pytest.approx(math.sqrt(2.0 / sum(w.shape)), rel=0.1)
        # dt_proj's bias at PyTorch's default U(±R^-1/2): Δ = softplus(b) ≥ softplus(-R^-1/2)
        # (0.47 at R = 4, 0.62 at the release's R = 32), far above Mamba's Δ₀ ≤ dt_max = 0.1
        bias = m.dt_proj.bias.detach()
        bound = m.dt_rank ** -0.5
        assert float(bias.abs().max()) <= bound
        assert float(torch.nn.functional.softplus(bias).min()) > 3 * m.dt_max
        assert torch.equal(m.D.detach(), torch.ones_like(m.D))


def test_release_init_encoder_and_decoder():
    conf = dict(output_size=64, attention_heads=4, num_blocks=1, d_state=32,
                subsampling_channels=8)
    enc = SpeechMambaEncoder(20, **conf, mamba_init="release")
    assert_release_init(enc)
    # the front-end's convolutions keep PyTorch's default (as the release's CNN)
    conv = enc.embed.embed.conv[0].weight.detach()
    assert float(conv.abs().max()) <= 1 / math.sqrt(9)
    dec = MambaDecoder(VOCAB, 64, d_state=32, num_blocks=1, mamba_init="release")
    assert_release_init(dec)
    # default: Mamba's own init, as before
    for m in mixers(SpeechMambaEncoder(20, **conf)) + mixers(MambaDecoder(VOCAB, 64, d_state=32)):
        assert type(m) is MambaMixer
        N = m.d_state
        torch.testing.assert_close(m.A_log.detach(),
                                   torch.log(torch.arange(1, N + 1.0)).expand_as(m.A_log))


def test_release_init_survives_espnet_init():
    """ESPnet's --init calls espnet_initialization_fn, which keeps the release's SSM init."""
    from espnet2.torch_utils.initialize import initialize

    dec = MambaDecoder(VOCAB, 64, d_state=32, num_blocks=1, mamba_init="release")
    initialize(dec, "xavier_uniform")
    assert_release_init(dec)


def test_release_config_size_and_online_twin():
    """The release config's model is within 3 % of the release's 67.6 M parameters (built on the
    meta device: no memory), and the online config differs from it only by causality."""
    import yaml

    off = yaml.safe_load((TUNING / "train_asr_speech_mamba.yaml").read_text())
    on = yaml.safe_load((TUNING / "train_asr_speech_mamba_online.yaml").read_text())
    assert off["decoder"] == on["decoder"] == "mamba"
    assert {**on["encoder_conf"], "causal": False} == {**off["encoder_conf"],
                                                        "attention_left_context": -1}
    assert {k: v for k, v in on.items() if k != "encoder_conf"} == {
        k: v for k, v in off.items() if k != "encoder_conf"}
    with torch.device("meta"):
        enc = SpeechMambaEncoder(80, **off["encoder_conf"])
        dec = MambaDecoder(5000, 512, **off["decoder_conf"])
    ctc = 512 * 5000 + 5000
    total = sum(p.numel() for p in enc.parameters()) + sum(p.numel() for p in dec.parameters())
    total += ctc
    assert abs(total / 67.6e6 - 1) < 0.03, total
