"""The per-DPU queue page, its JSON endpoints and the submission API (``dpu web``).

cards.py   the job cards session.submit drops in the DPU's job index (every user's jobs)
mirror.py  every user's jobs on one DPU: cards + one scheduler call + the workers' records
server.py  the HTTP server (stdlib): the page, the JSON endpoints, POST /api/run (api.py)
"""
