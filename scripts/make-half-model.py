#!/usr/bin/env python3
"""Usage: scripts/make-half-model.py IN.gguf OUT.gguf f16|bf16

Writes a copy of a GGUF model with every matrix in F16 or BF16: each is dequantised with
the `gguf` package and rounded (F16: to nearest; BF16: its top half, toward zero). The
rest (norms, metadata) is copied as it is. Such files are what users bring from
unquantised checkpoints; samd's kernels read them as 16-bit floats on wgpu
(docs/BENCHMARKS.md, "16-bit weights on wgpu"). Needs `gguf` and `numpy`.
"""
import sys

import gguf
import numpy as np


def main():
    if len(sys.argv) != 4 or sys.argv[3] not in ("f16", "bf16"):
        sys.exit(__doc__)
    src, dst, kind = sys.argv[1:]
    reader = gguf.GGUFReader(src)
    writer = gguf.GGUFWriter(dst, reader.fields["general.architecture"].contents())
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            writer.add_array(name, field.contents())
        else:
            writer.add_key_value(name, field.contents(), field.types[0])
    for t in reader.tensors:
        x = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        if x.ndim != 2:
            writer.add_tensor(t.name, x)
        elif kind == "f16":
            writer.add_tensor(t.name, x.astype(np.float16))
        else:
            top = (x.view(np.uint32) >> 16).astype(np.uint16)
            writer.add_tensor(t.name, top, raw_shape=x.shape,
                              raw_dtype=gguf.GGMLQuantizationType.BF16)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    main()
