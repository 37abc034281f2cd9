"""Simulated FR3 tabletop (MuJoCo): scripted demonstrations and closed-loop evaluation."""
