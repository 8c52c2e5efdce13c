"""The HEAR 2021 common API (hear-eval-kit, hear-validator) for any encoder culturemert loads.

```python
import culturemert.hear as hear

model = hear.load_model("path/to/MERT-v1-95M")            # a folder or a hub id
scene = hear.get_scene_embeddings(audio, model)           # [n_sounds, layers × dims]
frames, times_ms = hear.get_timestamp_embeddings(audio, model)
```

``audio`` is ``[n_sounds, n_samples]`` in [-1, 1] at ``model.sample_rate``. HEAR admits only
16,000, 22,050, 44,100 and 48,000 Hz; MERT reads 24 kHz, so the model declares 48 kHz (2:1, no
band lost) and resamples on the audio's device (:mod:`culturemert.resampling`). Timestamp
embeddings are the encoder's frames at 75 Hz (every 13.33 ms), stamped at frame centres in
milliseconds; long sounds run in windows as ``extract`` does (30 s by default), joined
frame-exactly, so attention never spans a whole long clip. Scene embeddings are the mean of a
sound's frames.

Layers: every hidden state concatenated in order by default (13 × 768 = 9,984 dims for
MERT-v1-95M), so a downstream probe sees what culturemert's probes see. Choose others with
``load_model(layers=...)`` or ``CULTUREMERT_HEAR_LAYERS`` (``all``, ``6``, ``4,8,12``;
negatives count back from the last).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from culturemert.devices import default_batch_size
from culturemert.embedding import embed_stream, frame_times, select_layers
from culturemert.extract import WINDOW_SECONDS
from culturemert.model.encoder import Encoder, open_encoder
from culturemert.resampling import resample

#: The rates the HEAR API admits as a model's ``sample_rate``.
HEAR_SAMPLE_RATES = (16000, 22050, 44100, 48000)
#: What ``load_model()`` loads when given no path.
DEFAULT_MODEL = "m-a-p/MERT-v1-95M"
#: Environment variable choosing the layers (when ``load_model`` is not told).
LAYERS_VARIABLE = "CULTUREMERT_HEAR_LAYERS"


class HearModel(nn.Module):
    """An encoder with the attributes HEAR asks of a model; ``.to(device)`` moves its weights."""

    def __init__(
        self,
        encoder: Encoder,
        *,
        layers: str | int | Sequence[int] = "all",
        sample_rate: int = 48000,
        window_seconds: float = WINDOW_SECONDS,
    ):
        super().__init__()
        if sample_rate not in HEAR_SAMPLE_RATES:
            raise ValueError(
                f"sample_rate must be one of {HEAR_SAMPLE_RATES} (the HEAR API's), got {sample_rate}"
            )
        if window_seconds <= 0:
            raise ValueError(f"window_seconds must be positive, got {window_seconds}")
        config = encoder.module.config
        self.module = encoder.module.eval()
        self.preprocessing = encoder.preprocessing
        self.sample_rate = sample_rate
        self.window_seconds = window_seconds
        self.layers = select_layers(layers, config.num_hidden_layers + 1)
        self.scene_embedding_size = len(self.layers) * config.hidden_size
        self.timestamp_embedding_size = self.scene_embedding_size

    @property
    def encoder(self) -> Encoder:
        """The wrapped module with its preprocessing, wherever ``.to`` has put it."""
        return Encoder(self.module, self.preprocessing)


def parse_layers(text: str) -> str | list[int]:
    """``"all"``, ``"6"`` or ``"4,8,12"`` as :func:`select_layers` takes them."""
    text = text.strip()
    if text == "all":
        return text
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(
            f"{LAYERS_VARIABLE}: expected 'all' or layer indices such as '4,8,12', got {text!r}"
        ) from None


def load_model(
    model_file_path: str = "",
    *,
    layers: str | int | Sequence[int] | None = None,
    sample_rate: int = 48000,
    window_seconds: float = WINDOW_SECONDS,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> HearModel:
    """HEAR's ``load_model``: a checkpoint folder or hub id (MERT-v1-95M when empty)."""
    if layers is None:
        layers = parse_layers(os.environ.get(LAYERS_VARIABLE, "all"))
    encoder = open_encoder(model_file_path or DEFAULT_MODEL, device=device, dtype=dtype)
    return HearModel(encoder, layers=layers, sample_rate=sample_rate, window_seconds=window_seconds)


def _at_encoder_rate(audio: Tensor, model: HearModel) -> Tensor:
    """``[n, samples]`` resampled to the encoder's rate and normalised as its checkpoint asks."""
    if audio.ndim != 2:
        raise ValueError(f"audio must be [n_sounds, n_samples], got shape {tuple(audio.shape)}")
    if not len(audio):
        raise ValueError("audio holds no sounds")
    waveforms = resample(audio.float(), model.sample_rate, model.preprocessing.sample_rate)
    if model.preprocessing.do_normalize:  # per sound, as Wav2Vec2FeatureExtractor does
        var, mean = torch.var_mean(waveforms, dim=-1, keepdim=True, correction=0)
        waveforms = (waveforms - mean) / torch.sqrt(var + 1e-7)
    return waveforms


def get_timestamp_embeddings(audio: Tensor, model: HearModel) -> tuple[Tensor, Tensor]:
    """HEAR's frame embeddings ``[n, frames, size]`` and their centres ``[n, frames]`` in ms."""
    waveforms = _at_encoder_rate(audio, model)
    encoder, rate = model.encoder, model.preprocessing.sample_rate
    seconds = waveforms.shape[-1] / rate
    batch = default_batch_size(encoder.device, min(model.window_seconds, seconds))
    stream = embed_stream(
        encoder,
        enumerate(waveforms),
        layers=model.layers,
        pool=None,
        window_seconds=model.window_seconds,
        batch_size=batch,
    )
    frames = []
    for index, features, error in stream:
        if error is not None:
            raise ValueError(f"audio[{index}]: {error} at {rate} Hz")
        # [layers, frames, dims] → [frames, layers · dims], layer by layer in order.
        features = torch.from_numpy(features)
        frames.append(features.permute(1, 0, 2).reshape(features.shape[1], -1))
    embeddings = torch.stack(frames).to(audio.device)
    times = torch.from_numpy(frame_times(embeddings.shape[1], rate) * 1000).float()
    return embeddings, times.to(audio.device).repeat(len(frames), 1)


def get_scene_embeddings(audio: Tensor, model: HearModel) -> Tensor:
    """HEAR's clip embeddings ``[n, size]``: the mean of each sound's frame embeddings."""
    embeddings, _ = get_timestamp_embeddings(audio, model)
    return embeddings.mean(dim=1)
