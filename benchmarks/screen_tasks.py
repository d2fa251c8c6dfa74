"""Screen reasoning-gym tasks for the built-in stream: score before and after training each alone.

For each candidate: exact match on 40 test prompts, then 48 LoRA steps (r 16, batch 8,
lr 1e-3, the chat template's default system prompt) on that task alone, then again.
Prints one line per task. About 2-5 minutes per task on 2 cores.

    .venv/bin/python benchmarks/screen_tasks.py                  # all candidates
    .venv/bin/python benchmarks/screen_tasks.py gcd syllogism    # some
"""
import os, time, re, sys, torch
os.environ["HF_HUB_OFFLINE"]="1"
from mssr.models import prepare_default_model
MODEL = str(prepare_default_model())
torch.set_num_threads(2); torch.manual_seed(0)
import reasoning_gym
from transformers import AutoTokenizer, AutoModelForCausalLM
from peft import LoraConfig, get_peft_model
tok = AutoTokenizer.from_pretrained(MODEL); tok.padding_side="left"
CANDS = {
 "chain_sum": dict(min_terms=2,max_terms=2,max_digits=1),
 "spell_backward": dict(min_word_len=3,max_word_len=4),
 "aiw": {},
 "syllogism": {},
 "color_cube_rotation": dict(max_rotations=1),
 "family_relationships": dict(max_family_size=4),
 "gcd": dict(max_value=30),
 "count_bits": dict(max_n=63),
 "base_conversion": dict(max_value=31, max_base=2),
 "letter_counting": dict(min_words=3,max_words=4),
}
only = sys.argv[1:] or list(CANDS)
def fmt(q): return tok.apply_chat_template([{"role":"user","content":q}], tokenize=False, add_generation_prompt=True)
def norm(s): return re.sub(r"\s+"," ",str(s).strip().lower().rstrip("."))
@torch.no_grad()
def evaluate(model, rows):
    model.eval(); ok=0
    for i in range(0,len(rows),20):
        b=rows[i:i+20]; enc=tok([fmt(r["question"]) for r in b], return_tensors="pt", padding=True, add_special_tokens=False)
        out=model.generate(**enc, max_new_tokens=16, do_sample=False, pad_token_id=tok.pad_token_id)
        for r,o in zip(b,out[:,enc.input_ids.shape[1]:]):
            ok += norm(tok.decode(o, skip_special_tokens=True))==norm(r["answer"])
    return ok/len(rows)
for name in only:
    ds = list(reasoning_gym.create_dataset(name, size=440, seed=7, **CANDS[name]))
    train, test = ds[:384], ds[400:440]
    lens=[len(tok(fmt(r["question"])+str(r["answer"])).input_ids) for r in train[:50]]
    model = AutoModelForCausalLM.from_pretrained(MODEL)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj","k_proj","v_proj","o_proj","up_proj","down_proj","gate_proj"], task_type="CAUSAL_LM"))
    t=time.time(); a0=evaluate(model,test); te=time.time()-t
    opt=torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train(); t=time.time(); ntok=0
    for s in range(48):
        b=train[s*8:(s+1)*8]
        p=[fmt(r["question"]) for r in b]; full=[x+str(r["answer"])+"<|im_end|>" for x,r in zip(p,b)]
        tok.padding_side="right"; enc=tok(full,return_tensors="pt",padding=True,add_special_tokens=False); tok.padding_side="left"
        labels=enc.input_ids.clone(); labels[enc.attention_mask==0]=-100
        for i,x in enumerate(p): labels[i,:len(tok(x,add_special_tokens=False).input_ids)]=-100
        loss=model(**enc,labels=labels).loss; loss.backward(); opt.step(); opt.zero_grad(); ntok+=enc.input_ids.numel()
    tt=time.time()-t
    a1=evaluate(model,test)
    print(f"{name:22s} len~{sum(lens)/len(lens):.0f} zero={a0:.2f} after={a1:.2f} loss={loss.item():.3f} train {tt:.0f}s {ntok/tt:.0f}tok/s eval {te:.0f}s ex={test[0]['answer']!r}", flush=True)
