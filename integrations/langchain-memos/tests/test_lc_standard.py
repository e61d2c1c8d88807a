"""LangChain's standard test suites (``langchain_tests``) run against the retriever and the memory tools."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.tools import BaseTool
from langchain_memos import AddMemoryTool, DeleteMemoryTool, MemOSRetriever, SearchMemoryTool, UpdateMemoryTool
from langchain_tests.integration_tests import RetrieversIntegrationTests, ToolsIntegrationTests
from langchain_tests.unit_tests import ToolsUnitTests

from memos_agents import MemOS

pytestmark = pytest.mark.unit


class TestMemOSRetrieverStandard(RetrieversIntegrationTests):
    """A retriever over alice's cube of twelve facts (so ``k`` of 1 and 3 can both be met)."""

    @pytest.fixture(autouse=True)
    def _memos(self, seeded: MemOS) -> None:
        self.mos = seeded

    @property
    def retriever_constructor(self) -> type[MemOSRetriever]:
        return MemOSRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"mos": self.mos, "user_id": "alice", "cube_ids": ["c1"]}

    @property
    def retriever_query_example(self) -> str:
        return "Where does Alice live?"


class _MemoryToolStandard:
    """Constructor parameters of a memory tool scoped by its defaults, and a stored memory's id."""

    tool_class: type[BaseTool]

    @pytest.fixture(autouse=True)
    def _memos(self, seeded: MemOS) -> None:
        self.mos = seeded
        self.memory_id = seeded.search("Alice lives in Lisbon", "alice", ["c1"], top_k=1)[0].item.id

    @property
    def tool_constructor(self) -> type[BaseTool]:
        return self.tool_class

    @property
    def tool_constructor_params(self) -> dict[str, Any]:
        return {"mos": self.mos, "default_user_id": "alice", "default_cube_id": "c1"}


class _SearchMemory(_MemoryToolStandard):
    tool_class = SearchMemoryTool

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {"query": "Where does Alice live?", "k": 3}


class _AddMemory(_MemoryToolStandard):
    tool_class = AddMemoryTool

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {"text": "Alice's favourite film is Spirited Away."}


class _UpdateMemory(_MemoryToolStandard):
    tool_class = UpdateMemoryTool

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {"memory_id": self.memory_id, "text": "Alice lives in Porto now."}


class _DeleteMemory(_MemoryToolStandard):
    tool_class = DeleteMemoryTool

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {"memory_id": self.memory_id}


class TestSearchMemoryToolUnit(_SearchMemory, ToolsUnitTests):
    pass


class TestSearchMemoryToolIntegration(_SearchMemory, ToolsIntegrationTests):
    pass


class TestAddMemoryToolUnit(_AddMemory, ToolsUnitTests):
    pass


class TestAddMemoryToolIntegration(_AddMemory, ToolsIntegrationTests):
    pass


class TestUpdateMemoryToolUnit(_UpdateMemory, ToolsUnitTests):
    pass


class TestUpdateMemoryToolIntegration(_UpdateMemory, ToolsIntegrationTests):
    pass


class TestDeleteMemoryToolUnit(_DeleteMemory, ToolsUnitTests):
    pass


class TestDeleteMemoryToolIntegration(_DeleteMemory, ToolsIntegrationTests):
    pass
