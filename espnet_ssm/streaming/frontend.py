r"""Chunked feature extraction that reproduces ESPnet's offline front-end exactly.

ESPnet's ``DefaultFrontend`` computes, for a waveform :math:`x_0 .. x_{N-1}`, a centred STFT
(``torch.stft(center=True)``, reflect padding of :math:`p = \lfloor n_{fft}/2 \rfloor` samples on
each side), the power spectrum, a log-mel projection, and then the model's normalisation
(``GlobalMVN``). With the padded signal

.. math::

    \tilde x = (x_p, x_{p-1}, .., x_1,\; x_0, .., x_{N-1},\; x_{N-2}, .., x_{N-1-p})

frame :math:`t` is the windowed FFT of :math:`\tilde x[t\,h .. t\,h + n_{fft})` (hop h), and there
are :math:`F = \lfloor (N + 2p - n_{fft}) / h \rfloor + 1` frames.

:class:`StreamingFrontend` receives the waveform in chunks and emits every frame as soon as its
samples are known: the left reflection needs the first :math:`p + 1` samples; frames that reach
into the right reflection wait for the end of the stream (``is_final``). It keeps only the
samples that frames still to come will read, so memory stays bounded however long the stream.
The frames are computed by the same ``torch.stft`` call (on the uncentred padded signal), the same
log-mel module and the same normalisation statistics as the offline path.

ESPnet's ``LogMel`` and ``GlobalMVN`` build their padding masks with ``make_pad_mask``, whose
traceable path costs O(T²) memory for long inputs; here normalisation is applied directly from
the module's statistics (one utterance, no padding), so a recording of an hour is fine.
"""
from __future__ import annotations

from typing import Optional

import torch
from espnet2.asr.frontend.default import DefaultFrontend
from espnet2.layers.global_mvn import GlobalMVN
from espnet2.layers.utterance_mvn import UtteranceMVN


class FrontendConfigError(ValueError):
    """The model's front-end or normalisation cannot be computed chunk by chunk."""


def check_waveform(samples: torch.Tensor, what: str = "audio chunk") -> torch.Tensor:
    """Return ``samples`` as a 1-D float32 tensor; reject multi-channel and non-finite audio."""
    if not isinstance(samples, torch.Tensor):
        samples = torch.as_tensor(samples)
    if samples.dim() == 2 and samples.size(1) == 1:
        samples = samples[:, 0]
    if samples.dim() != 1:
        raise ValueError(
            f"{what}: expected mono samples of shape (n,) or (n, 1), got shape "
            f"{tuple(samples.shape)}"
        )
    if not samples.is_floating_point():
        # Integer PCM would need a scale ESPnet's loader applies (samples in [-1, 1]).
        raise ValueError(
            f"{what}: expected floating-point samples in [-1, 1] (as soundfile reads them), "
            f"got dtype {samples.dtype}"
        )
    samples = samples.to(torch.float32)
    if not torch.isfinite(samples).all():
        raise ValueError(f"{what}: contains NaN or Inf samples")
    return samples


def frontend_sample_rate(frontend: DefaultFrontend) -> int:
    """Sampling rate the model's log-mel filterbank was built for."""
    return int(frontend.logmel.mel_options["sr"])


def check_streamable_frontend(frontend: Optional[torch.nn.Module]) -> DefaultFrontend:
    """The model's front-end if it is a single-channel STFT + log-mel ``DefaultFrontend``."""
    if not isinstance(frontend, DefaultFrontend):
        raise FrontendConfigError(
            f"streaming and long-form recognition need the model's frontend to be ESPnet's "
            f"'default' (STFT + log-mel) frontend, got {type(frontend).__name__}"
        )
    if frontend.stft is None:
        raise FrontendConfigError("frontend_conf.apply_stft=false is not supported for streaming")
    enh = frontend.frontend
    if enh is not None and (enh.use_wpe or enh.use_beamformer):
        raise FrontendConfigError(
            "frontend_conf.frontend_conf with WPE or a beamformer (multi-channel) is not "
            "supported for streaming"
        )
    return frontend


class FeatureNormalizer:
    """The model's feature normalisation applied to one utterance in linear memory.

    * ``GlobalMVN``: :math:`y = (x - \\mu) / \\sigma` with the training statistics (per frame,
      so it streams);
    * ``UtteranceMVN``: statistics of the whole utterance (``streamable`` is False: usable for
      long-form recognition, where the whole feature sequence is known);
    * ``None``: identity.
    """

    def __init__(self, normalize: Optional[torch.nn.Module]):
        if normalize is not None and not isinstance(normalize, (GlobalMVN, UtteranceMVN)):
            raise FrontendConfigError(
                f"normalize: {type(normalize).__name__} is not supported (use global_mvn, "
                "utterance_mvn or none)"
            )
        self.normalize = normalize
        self.streamable = not isinstance(normalize, UtteranceMVN)

    def __call__(self, feats: torch.Tensor) -> torch.Tensor:
        """(T, D) -> (T, D)."""
        norm = self.normalize
        if isinstance(norm, GlobalMVN):
            # Same operations, in the same order, as GlobalMVN.forward on an unpadded utterance.
            if norm.norm_means:
                feats = feats - norm.mean.to(feats.device, feats.dtype)
            if norm.norm_vars:
                feats = feats / norm.std.to(feats.device, feats.dtype)
            return feats
        if isinstance(norm, UtteranceMVN):
            if feats.size(0) == 0:
                return feats
            # Same maths as espnet2.layers.utterance_mvn.utterance_mvn for one utterance.
            count = float(feats.size(0))
            mean = feats.sum(dim=0, keepdim=True) / count
            centred = feats - mean
            if norm.norm_vars:
                std = torch.clamp((centred.pow(2).sum(dim=0, keepdim=True) / count).sqrt(),
                                  min=norm.eps)
                if norm.norm_means:
                    return centred / std
                return feats / std
            return centred if norm.norm_means else feats
        return feats


class StreamingFrontend:
    """Log-mel features of a waveform fed chunk by chunk, equal to the offline front-end's.

    Args:
        frontend: the model's ``DefaultFrontend`` (``asr_model.frontend``).
        normalize: the model's ``normalize`` module (``GlobalMVN``) or None.

    Call it with successive chunks; it returns the newly completed frames, shape (t, n_mels),
    possibly (0, n_mels). ``is_final=True`` ends the stream (the right reflection is applied and
    the remaining frames are returned); the object is then ready for a new stream.

    A stream of at most ``n_fft // 2`` samples gives no frames: ESPnet's centred STFT cannot
    reflect-pad it (``torch.stft`` raises on such input).
    """

    def __init__(self, frontend: Optional[torch.nn.Module], normalize: Optional[torch.nn.Module]):
        frontend = check_streamable_frontend(frontend)
        self.frontend = frontend
        self.normalizer = FeatureNormalizer(normalize)
        stft = frontend.stft
        self.n_fft = stft.n_fft
        self.win_length = stft.win_length
        self.hop = stft.hop_length
        self.center = stft.center
        self.pad = self.n_fft // 2 if self.center else 0
        self.sample_rate = frontend_sample_rate(frontend)
        window = None
        if stft.window is not None:
            window = getattr(torch, f"{stft.window}_window")(self.win_length, dtype=torch.float32)
        self._window = window
        self.n_mels = frontend.output_size()
        self.reset()

    def reset(self) -> None:
        """Forget the current stream."""
        self._head = torch.zeros(0)  # first samples, kept until the left reflection is built
        self._buf = torch.zeros(0)  # padded signal from padded index self._buf_start on
        self._buf_start = 0
        self._received = 0  # real samples received
        self._frames = 0  # frames emitted
        self._padded_left = not self.center

    @property
    def samples_received(self) -> int:
        """Samples received in the current stream."""
        return self._received

    @property
    def frames_emitted(self) -> int:
        """Frames returned so far in the current stream."""
        return self._frames

    def num_frames(self, num_samples: int) -> int:
        """Frames the offline front-end gives for ``num_samples`` samples."""
        padded = num_samples + 2 * self.pad
        if (self.center and num_samples <= self.pad) or padded < self.n_fft:
            return 0
        return (padded - self.n_fft) // self.hop + 1

    def _frames_upto(self, padded_len: int) -> int:
        """Number of frames lying entirely within the first ``padded_len`` padded samples."""
        if padded_len < self.n_fft:
            return 0
        return (padded_len - self.n_fft) // self.hop + 1

    def _compute(self, first: int, last: int) -> torch.Tensor:
        """Normalised features of frames ``first .. last - 1`` from the buffer."""
        if last <= first:
            return torch.zeros(0, self.n_mels)
        lo = first * self.hop - self._buf_start
        hi = (last - 1) * self.hop + self.n_fft - self._buf_start
        seg = self._buf[lo:hi]
        spec = torch.stft(
            seg,
            n_fft=self.n_fft,
            hop_length=self.hop,
            win_length=self.win_length,
            window=self._window,
            center=False,
            normalized=self.frontend.stft.normalized,
            onesided=self.frontend.stft.onesided,
            return_complex=True,
        )  # (F, frames)
        spec = torch.view_as_real(spec).transpose(0, 1)  # (frames, F, 2)
        power = spec[..., 0] ** 2 + spec[..., 1] ** 2
        feats, _ = self.frontend.logmel(power[None], None)  # no lengths: no O(T^2) mask
        return self.normalizer(feats[0])

    def __call__(self, samples: torch.Tensor, is_final: bool = False) -> torch.Tensor:
        """Feed ``samples`` (n,); return the frames completed by them, (t, n_mels)."""
        if not self.normalizer.streamable:
            raise FrontendConfigError(
                "normalize: utterance_mvn needs the whole utterance; it cannot stream "
                "(long-form recognition supports it)"
            )
        samples = check_waveform(samples)
        self._received += samples.numel()
        if not self._padded_left:
            self._head = torch.cat([self._head, samples])
            if self._head.numel() > self.pad:  # x[1..p] known: build the left reflection
                self._buf = torch.cat([self._head[1 : self.pad + 1].flip(0), self._head])
                self._head = self._head[:0]
                self._padded_left = True
        else:
            self._buf = torch.cat([self._buf, samples])

        if not self._padded_left:  # too few samples so far (or in total) to reflect-pad
            out = torch.zeros(0, self.n_mels)
            if is_final:
                self.reset()
            return out

        available = self._buf_start + self._buf.numel()  # padded samples known
        if is_final:
            n = self._received
            if self.center:
                # right reflection: x[N-2], ..., x[N-1-p] (padded indices N+p-2 .. N-1)
                tail = self._buf[n - 1 - self._buf_start : n + self.pad - 1 - self._buf_start]
                self._buf = torch.cat([self._buf, tail.flip(0)])
            total = self.num_frames(n)
            out = self._compute(self._frames, total)
            self.reset()
            return out

        ready = self._frames_upto(available)
        out = self._compute(self._frames, ready)
        self._frames = max(self._frames, ready)
        # Keep what later frames read, and the last p + 1 real samples for the right reflection.
        keep_from = min(self._frames * self.hop, self.pad + self._received - (self.pad + 1))
        drop = keep_from - self._buf_start
        if drop > 0:
            self._buf = self._buf[drop:]
            self._buf_start = keep_from
        return out


def extract_features(
    frontend: Optional[torch.nn.Module],
    normalize: Optional[torch.nn.Module],
    speech: torch.Tensor,
    chunk_samples: int = 16000 * 30,
) -> torch.Tensor:
    """Normalised features (T, n_mels) of a whole recording, computed in chunks.

    Memory is that of the features plus one chunk: ESPnet's batch path pads and masks with
    O(T²) helpers. ``UtteranceMVN`` is applied after all frames are known.
    """
    if chunk_samples <= 0:
        raise ValueError(f"chunk_samples must be > 0, got {chunk_samples}")
    speech = check_waveform(speech, "speech")
    norm = FeatureNormalizer(normalize)
    sf = StreamingFrontend(frontend, normalize if norm.streamable else None)
    parts = []
    n = speech.numel()
    start = 0
    while True:
        end = min(start + chunk_samples, n)
        parts.append(sf(speech[start:end], is_final=end >= n))
        if end >= n:
            break
        start = end
    feats = torch.cat(parts) if parts else torch.zeros(0, sf.n_mels)
    return feats if norm.streamable else norm(feats)
