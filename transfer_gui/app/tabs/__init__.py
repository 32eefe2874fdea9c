"""The page's tabs, one module each: its components and the wiring of its events, side by side.

No logic lives here: each tab's events are its step's functions (data.py -> data_step.py, ...,
sort.py -> sort_step.py), wired through ``Wire``. A tab's ``wire`` runs once every tab is built,
because some events update components of other tabs (a training fills the Results).
"""
