"""Use cases: async functions whose only collaborators are ports."""
