"""Read and write each file kind: torch (zip and legacy), safetensors, sharded directories, DCP."""
