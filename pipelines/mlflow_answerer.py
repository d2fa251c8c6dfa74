"""The MLflow model of a run: a pyfunc that answers prompts with the run's final model.

MLflow copies this file into the logged model ("models from code"), so loading the model
needs MLflow, transformers and peft, not MSSR. The model's one artifact, ``model``, is the
folder ``mssr export`` writes (a peft adapter or a merged model, the tokenizer, the model
card) plus ``prompting.json``: how the run wrote prompts (chat template or plain, system
prompt) and how many tokens an answer may take. Answers are greedy and stop at the
end-of-sequence token, as the run's evaluation generates them.

    model = mlflow.pyfunc.load_model("runs:/RUN_ID/model")        # or "models:/NAME/1"
    model.predict(["State the final answer: 2 + 3 ="])             # ["5"]
    model.predict(pandas.DataFrame({"prompt": [...]}))            # the same
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
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        adapter = folder / "adapter_config.json"
        if adapter.exists():
            from peft import PeftModel

            base = json.loads(adapter.read_text())["base_model_name_or_path"]
            self.model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), folder)
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
        prompts = list(model_input)
        tok, answers = self.tokenizer, []
        for prompt in prompts:
            ids = tok(self.prompt_text(str(prompt)), add_special_tokens=False, return_tensors="pt")
            with torch.no_grad():
                out = self.model.generate(
                    **ids,
                    max_new_tokens=self.prompting["max_new_tokens"],
                    do_sample=False,
                    pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
                    eos_token_id=tok.eos_token_id,
                )
            answers.append(tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip())
        return answers


mlflow.models.set_model(Answerer())
