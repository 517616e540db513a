"""Presentation: results -> plotly figures (plots), pandas tables (tables), and a notebook's display
(notebook). Nothing here computes model math."""
