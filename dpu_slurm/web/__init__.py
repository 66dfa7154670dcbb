"""The per-DPU queue page, its JSON endpoints and the submission API (``dpu web``).

mirror.py    every user's jobs on one DPU: the cards of the job index (../index.py), one
             scheduler call and the workers' records
state.py     the background refresh and the snapshot every request reads
pages.py     rendering that replaces what it cannot encode (HTML, JSON, log text)
app.py       one DPU's routes and state
hub.py       several DPUs on one server: the overview (/, /dpus, /api/dpus) and /dpu/NAME/
hostguard.py the request guard (Host allow-list, limits, request log)
server.py    uvicorn: the socket, the idle timeout, backlog and connection limits (``web`` extra)
api.py       POST /api/run
commands.py  ``dpu web``, ``dpu queue``, ``dpu token``
"""
