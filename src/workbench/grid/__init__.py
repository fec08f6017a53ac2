"""Comparison grids: media × prompts = cells, several models per cell, one judge per cell.

    job = wb.grid.submit(media=["a.mp4", "b.mp4"], prompts=["Summarise", "List the objects"],
                         models=["gemini-2.5-flash", "gemini-2.5-pro"], judge="gemini-2.5-pro")
    job.wait(); job.scores(); job.report("grid.html")
"""
