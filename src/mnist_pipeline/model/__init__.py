"""The networks and the checkpoint format that rebuilds them."""
