"""Pictures of maps: overlays and grids (`overlays`), and the offline concept explorer (`explorer`).

NumPy, Pillow and matplotlib only; nothing here imports a framework.
"""
