"""The bottom layer: files written atomically and privately, images decoded safely, frame sources (cameras,
videos, folders). Nothing here knows about faces."""
