"""The MLflow model of a run: a pyfunc that answers prompts with the run's final model.

MLflow copies this file into the logged model ("models from code"), so loading the model
needs MLflow, transformers and peft, not MSSR. The model's one artifact, ``model``, is a
folder ``mssr export`` writes (a merged model, or a peft adapter whose base is a hub model,
named there by id and commit and downloaded where the model is loaded) plus
``prompting.json``: how the run wrote prompts (chat template or plain, system prompt).

    model = mlflow.pyfunc.load_model("runs:/RUN_ID/model")        # or "models:/NAME/1"
    model.predict(["State the final answer: 2 + 3 ="])             # ["5"]
    model.predict(pandas.DataFrame({"prompt": [...]}))            # the same
    model.predict(prompts, params={"max_new_tokens": 64, "temperature": 0.7, "batch_size": 16})

Answers are generated in batches (left-padded), greedily unless ``temperature`` > 0, and stop
at the end-of-sequence token; the defaults of the parameters are the run's evaluation's.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
from mlflow.pyfunc import PythonModel

PROMPTING_FILE = "prompting.json"


class Answerer(PythonModel):
    def load_context(self, context) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = Path(context.artifacts["model"])
        self.prompting = json.loads((folder / PROMPTING_FILE).read_text())
        self.tokenizer = AutoTokenizer.from_pretrained(folder, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if (folder / "adapter_config.json").exists():
            from peft import AutoPeftModelForCausalLM  # the base by the id and revision the adapter names

            self.model = AutoPeftModelForCausalLM.from_pretrained(folder)
        else:
            self.model = AutoModelForCausalLM.from_pretrained(folder)
        self.model.eval()

    def prompt_text(self, prompt: str) -> str:
        """The prompt as the run trained on it (``mssr.tokenize.PromptEncoder.prompt_text``)."""
        if self.prompting["prompt_format"] == "chat" and getattr(self.tokenizer, "chat_template", None):
            system = self.prompting["system_prompt"]
            messages = ([] if system is None else [{"role": "system", "content": system}]) + [
                {"role": "user", "content": prompt}
            ]
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return f"Question: {prompt}\nAnswer: "

    def predict(self, context, model_input, params=None) -> list[str]:
        import torch

        if hasattr(model_input, "columns"):  # a DataFrame: its "prompt" column, else its only column
            model_input = model_input["prompt"] if "prompt" in model_input.columns else model_input.iloc[:, 0]
        prompts = [str(p) for p in model_input]
        params = params or {}
        max_new_tokens = int(params.get("max_new_tokens", 32))
        temperature = float(params.get("temperature", 0.0))
        batch_size = max(1, int(params.get("batch_size", 8)))
        tok, answers = self.tokenizer, []
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        for start in range(0, len(prompts), batch_size):
            texts = [self.prompt_text(p) for p in prompts[start : start + batch_size]]
            batch = tok(texts, add_special_tokens=False, return_tensors="pt", padding=True)
            with torch.no_grad():
                out = self.model.generate(
                    **batch,
                    max_new_tokens=max_new_tokens,
                    pad_token_id=tok.pad_token_id,
                    eos_token_id=tok.eos_token_id,
                    **sampling,
                )
            new = out[:, batch["input_ids"].shape[1] :]
            answers += [tok.decode(row, skip_special_tokens=True).strip() for row in new]
        return answers


mlflow.models.set_model(Answerer())
