"""A worker process that fails says why, in the run's report."""


def test_a_worker_that_fails_before_its_first_request_says_why(start_target, monkeypatch):
    # (found while building this: the failure frame went to a descriptor the loop had closed,
    # so the run said only "worker 0 exited with code 1")
    from loadtester import _engine
    from loadtester.run import runner
    from loadtester.spec import build_spec

    def refuse(**kwargs):
        raise ValueError("no client today")

    target = start_target()
    monkeypatch.setattr(_engine, "Client", refuse)     # inherited by the forked workers
    result = runner.run_blast(build_spec(target.url, requests=10, connections=2, workers=2))
    assert result.status == "failed"
    assert sorted(result.worker_errors) == [f"worker {w}: ValueError: no client today"
                                            for w in (0, 1)]
