"""`bench report`: paper-vs-measured tables (Markdown, LaTeX, CSV), plots and a README, regenerated from results/.

paper.py loads the paper's numbers (results/paper/*.json); select.py maps a record to a table row from its config;
tables.py builds rows and render.py writes them; plots.py draws; build.py orchestrates and writes reports/.
"""
