"""Batches for encoder training and inference in torch: padding, length-sorted batches, and the inputs of the
trained part of the model (token ids, or the cached states of frozen bottom blocks)."""

from __future__ import annotations

import hashlib
import random
import sys

import numpy as np
import torch
from tqdm import tqdm

from tools.modelling.encoder_model import EncoderClassifier, bottom_states, top_logits


def padded(batch: list[list[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(1, *map(len, batch))
    ids = torch.zeros((len(batch), width), dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, seq in enumerate(batch):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids.to(device), mask.to(device)


def length_batches(ids: list[list[int]], size: int, rng: random.Random | None) -> list[list[int]]:
    """Indices in batches of similar length; with ``rng`` the lengths are jittered and the batches shuffled."""
    jitter = (lambda: rng.random() * 8) if rng else (lambda: 0.0)
    order = sorted(range(len(ids)), key=lambda n: len(ids[n]) + jitter())
    batches = [order[start : start + size] for start in range(0, len(order), size)]
    if rng:
        rng.shuffle(batches)
    return batches


class Inputs:
    """A data set as the trained part of the model sees it: token ids, or (with frozen bottom blocks) the
    token states those blocks give, computed once: each epoch then runs the top blocks only."""

    def __init__(
        self,
        model: EncoderClassifier,
        ids: list[list[int]],
        bottom: int,
        device: torch.device,
        cache: dict[bytes, torch.Tensor] | None = None,
    ) -> None:
        self.ids, self.bottom, self.device = ids, bottom, device
        self.states: list[torch.Tensor] = []
        if bottom:
            cache = {} if cache is None else cache
            keys = [hashlib.sha1(np.asarray(seq, dtype=np.int64).tobytes()).digest() for seq in ids]
            todo = [n for n, key in enumerate(keys) if key not in cache]
            batches = [[todo[n] for n in batch] for batch in length_batches([ids[n] for n in todo], 32, None)]
            for batch in tqdm(
                batches,
                desc=f"encoding with the {bottom} frozen blocks",
                unit="batch",
                file=sys.stderr,
                mininterval=5,
                dynamic_ncols=True,
            ):
                input_ids, mask = padded([ids[n] for n in batch], device)
                states = bottom_states(model, input_ids, mask, bottom)
                for row, n in enumerate(batch):
                    cache[keys[n]] = states[row, : len(ids[n])].clone().cpu()
            self.states = [cache[key].to(device) for key in keys]

    def logits(self, model: EncoderClassifier, batch: list[int]) -> torch.Tensor:
        if not self.bottom:
            return model(*padded([self.ids[n] for n in batch], self.device))
        width = max(len(self.ids[n]) for n in batch)
        states = torch.zeros((len(batch), width, self.states[batch[0]].shape[-1]), device=self.device)
        mask = torch.zeros((len(batch), width), dtype=torch.long, device=self.device)
        for row, n in enumerate(batch):
            states[row, : len(self.ids[n])] = self.states[n]
            mask[row, : len(self.ids[n])] = 1
        return top_logits(model, states, mask, self.bottom)


@torch.no_grad()
def predict(
    model: EncoderClassifier, ids: list[list[int]], device: torch.device, size: int = 32, inputs: Inputs | None = None
) -> np.ndarray:
    model.eval()
    inputs = inputs or Inputs(model, ids, 0, device)
    out = np.zeros((len(ids), model.head.out_features), dtype=np.float32)
    for batch in length_batches(ids, size, None):
        out[batch] = torch.softmax(inputs.logits(model, batch), dim=-1).float().cpu().numpy()
    return out
