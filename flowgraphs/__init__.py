"""Action flowgraphs: the .grc files owners design in GNU Radio Companion and the Python grcc generates from them."""
