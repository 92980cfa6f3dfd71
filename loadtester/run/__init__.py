"""Running a blast: the runner forks worker processes (each a uvloop loop driving the engine) and
merges what they report; blast ties spec -> runner -> store writer -> report together; proc holds
the process helpers the web app shares."""
