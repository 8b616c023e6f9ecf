"""Declarative voice agents: the agent file format, its loader and validation."""

from parley.agent.loader import AgentError, AgentFileError, load_agent, validate_file
from parley.agent.model import (
    Agent,
    AskStep,
    BranchCase,
    BranchStep,
    Condition,
    ConfirmPolicy,
    GlobalIntentAction,
    HangupStep,
    SayStep,
    Settings,
    SlotKind,
    Step,
    TransferStep,
    Voice,
    WebhookStep,
    speech_slot_type,
)

__all__ = [
    "Agent",
    "AgentError",
    "AgentFileError",
    "AskStep",
    "BranchCase",
    "BranchStep",
    "Condition",
    "ConfirmPolicy",
    "GlobalIntentAction",
    "HangupStep",
    "SayStep",
    "Settings",
    "SlotKind",
    "Step",
    "TransferStep",
    "Voice",
    "WebhookStep",
    "load_agent",
    "speech_slot_type",
    "validate_file",
]
