"""Inside one ggml block: which byte plays which role, and how one weight is rebuilt from its bytes.

    anatomy.byte_roles("Q4_K")           # 144 labels: "scale" x2, "min" x2, "sub-block scales" x12, "quants" x128
    anatomy.explain(block_bytes, "Q4_K", 70)
    # {'weight': 70, 'sub_block': 2, 'd': ..., 'sub_scale': ..., 'dmin': ..., 'sub_min': ..., 'code': ...,
    #  'value': ..., 'formula': 'd * sc * q - dmin * m = ...'}

``explain`` reads the fields with the same unpacking the dequantizers use, so its value is the decoded one.
"""
from __future__ import annotations

import numpy as np

from qtutor.formats.ggml import dequantize, kquants, legacy
from qtutor.formats.ggml.layouts import BLOCK, ROLE, WEIGHTS_PER_BLOCK


def byte_roles(type_name: str) -> list[str]:
    """The role of every byte of a block, in storage order."""
    roles = []
    for field in BLOCK[type_name].names:
        roles += [ROLE[field]] * BLOCK[type_name][field].itemsize
    return roles


def _codes(block: np.ndarray, type_name: str) -> np.ndarray:
    """Unsigned element codes of one block, as the dequantizer reads them (before offsets)."""
    if type_name in legacy.QUANTIZE:
        if type_name == "Q8_0":
            return block["qs"][0].astype(np.int32)
        codes = legacy._unpack_halves(block["qs"])[0]
        if type_name in ("Q5_0", "Q5_1"):
            codes = codes | legacy._unpack_high_bits(block["qh"])[0]
        return codes
    if type_name in ("Q4_K", "Q5_K"):
        qs = block["qs"].reshape(4, 32).astype(np.int32)
        codes = np.stack([qs & 0x0F, qs >> 4], axis=1)
        if type_name == "Q5_K":
            shifts = (2 * np.arange(4)[:, None] + np.arange(2)[None, :])[:, :, None]
            codes = codes | (((block["qh"][0].astype(np.int32)[None, None, :] >> shifts) & 1) << 4)
        return codes.reshape(256)
    if type_name == "Q2_K":
        return kquants.unpack_2bit(block["qs"])[0]
    if type_name == "Q3_K":
        high = (block["hmask"][0].astype(np.int32)[None, :] >> np.arange(8)[:, None]) & 1
        return kquants.unpack_2bit(block["qs"])[0] + 4 * high.reshape(256)
    ql = block["ql"].reshape(2, 2, 32).astype(np.int32)
    qh = block["qh"].reshape(2, 1, 32).astype(np.int32)
    low = np.stack([ql[:, 0] & 0x0F, ql[:, 1] & 0x0F, ql[:, 0] >> 4, ql[:, 1] >> 4], axis=1)
    return (low | (((qh >> (2 * np.arange(4))[None, :, None]) & 3) << 4)).reshape(256)


def explain(block_bytes: np.ndarray, type_name: str, index: int) -> dict:
    """How weight ``index`` of one block is rebuilt: its scale(s), its code, the formula and the value."""
    block = np.ascontiguousarray(np.asarray(block_bytes, dtype=np.uint8).reshape(-1)).view(BLOCK[type_name])
    if not 0 <= index < WEIGHTS_PER_BLOCK[type_name]:
        raise ValueError(f"{type_name} blocks hold {WEIGHTS_PER_BLOCK[type_name]} weights; index {index} is outside")
    code = int(_codes(block, type_name)[index])
    value = float(dequantize(block_bytes, type_name)[0, index])
    out = {"type": type_name, "weight": index, "code": code, "value": value}
    if type_name == "MXFP4":
        scale = float(legacy.mxfp4_half_scale(block["e"])[0])
        out.update(e=int(block["e"][0]), formula=f"2^(e-128) * kv[q] = {scale:.4g} * {legacy.MXFP4_DOUBLED[code]:g}")
    elif type_name in legacy.QUANTIZE:
        d = float(block["d"][0])
        offset = {"Q4_0": 8, "Q5_0": 16}.get(type_name)
        if type_name == "Q8_0":
            out.update(d=d, formula=f"d * q = {d:.4g} * {code}")
        elif offset is not None:
            out.update(d=d, formula=f"d * (q - {offset}) = {d:.4g} * ({code} - {offset})")
        else:
            m = float(block["m"][0])
            out.update(d=d, m=m, formula=f"d * q + m = {d:.4g} * {code} + {m:.4g}")
    elif type_name in ("Q4_K", "Q5_K"):
        sub = index // 32
        ls, lm = kquants.unpack_scales_mins_6bit(block["scales"])
        d, dmin = float(block["d"][0]), float(block["dmin"][0])
        out.update(sub_block=sub, d=d, dmin=dmin, sub_scale=int(ls[0, sub]), sub_min=int(lm[0, sub]),
                   formula=f"d * sc * q - dmin * m = {d:.4g} * {ls[0, sub]} * {code} - {dmin:.4g} * {lm[0, sub]}")
    elif type_name == "Q2_K":
        sub = index // 16
        packed = int(block["scales"][0, sub])
        d, dmin = float(block["d"][0]), float(block["dmin"][0])
        out.update(sub_block=sub, d=d, dmin=dmin, sub_scale=packed & 15, sub_min=packed >> 4,
                   formula=f"d * sc * q - dmin * m = {d:.4g} * {packed & 15} * {code} - {dmin:.4g} * {packed >> 4}")
    elif type_name == "Q3_K":
        sub = index // 16
        sc = int(kquants.unpack_scales_6bit_q3(block["scales"])[0, sub])
        d = float(block["d"][0])
        out.update(sub_block=sub, d=d, sub_scale=sc, formula=f"d * sc * (q - 4) = {d:.4g} * {sc} * ({code} - 4)")
    else:  # Q6_K
        sub = index // 16
        sc = int(block["scales"][0, sub])
        d = float(block["d"][0])
        out.update(sub_block=sub, d=d, sub_scale=sc, formula=f"d * sc * (q - 32) = {d:.4g} * {sc} * ({code} - 32)")
    return out


def explain_iq2_xxs_group(block_bytes: np.ndarray, group: int) -> dict:
    """How the 8 weights of group ``group`` (0 .. 31) of one IQ2_XXS super-block are rebuilt from its bytes.

    Each 32 weights own two little-endian 32-bit words: the first holds the four groups' 8-bit grid indices,
    the second their four 7-bit sign masks (bits 7 k .. 7 k + 6) and, in its top 4 bits, the scale l. The
    eighth sign is the one that makes the count of minus signs even. weight = d (0.5 + l) / 4 * grid * sign."""
    from qtutor.formats.ggml import iq2
    from qtutor.formats.ggml.lattice import grid

    block = np.ascontiguousarray(np.asarray(block_bytes, dtype=np.uint8).reshape(-1)).view(BLOCK["IQ2_XXS"])
    if not 0 <= group < 32:
        raise ValueError(f"an IQ2_XXS super-block holds 32 groups of 8 weights; group {group} is outside")
    words = np.ascontiguousarray(block["qs"]).view(np.uint32).reshape(8, 2)
    word, k = divmod(group, 4)
    index = int((words[word, 0] >> np.uint32(8 * k)) & np.uint32(0xFF))
    stored = int((words[word, 1] >> np.uint32(7 * k)) & np.uint32(127))
    signs = int(iq2.with_parity_bit(np.array([stored], np.uint32))[0])
    l = int(words[word, 1] >> np.uint32(28))
    d = float(block["d"][0])
    magnitudes = grid("IQ2_XXS").values[index]
    negative = [(signs >> j) & 1 for j in range(8)]
    values = dequantize(block_bytes, "IQ2_XXS")[0, 8 * group:8 * group + 8]
    return {"type": "IQ2_XXS", "group": group, "words": (int(words[word, 0]), int(words[word, 1])),
            "grid_index": index, "magnitudes": [int(m) for m in magnitudes], "stored_signs": f"{stored:07b}"[::-1],
            "parity_sign": negative[7], "negative": negative, "l": l, "d": d,
            "scale": float(np.float32(d) * (np.float32(0.5) + np.float32(l)) * np.float32(0.25)),
            "values": [float(v) for v in values],
            "formula": f"d (0.5 + l) / 4 * grid[{index}] * signs = {d:.4g} * {0.5 + l} / 4 * "
                       f"({', '.join(('-' if s else '+') + str(int(m)) for m, s in zip(magnitudes, negative))})"}
