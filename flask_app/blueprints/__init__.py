"""HTTP edges: each module exposes one blueprint named `bp`."""
