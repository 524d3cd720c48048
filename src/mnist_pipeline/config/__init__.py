"""The typed, validated params: `params.yaml`'s sections and the strict YAML-to-dataclass parser."""
