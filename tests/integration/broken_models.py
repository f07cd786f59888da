"""Model files that get past every check llmctl makes before a server tries them."""

from __future__ import annotations

from pathlib import Path


def write_missing_tensor_gguf(source: Path, target: Path) -> Path:
    """A GGUF whose header reads fine but which llama.cpp cannot load (a tensor is missing):
    the kind of file that gets past every check before the server tries it."""
    import gguf  # noqa: PLC0415

    reader = gguf.GGUFReader(str(source))
    writer = gguf.GGUFWriter(str(target), "llama")
    for item in reader.fields.values():
        if item.name.startswith("GGUF.") or item.name == "general.architecture":
            continue
        sub = item.types[-1] if item.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(item.name, item.contents(), item.types[0], sub)
    for tensor in reader.tensors:
        if tensor.name != "output_norm.weight":
            writer.add_tensor(tensor.name, tensor.data, raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target
