/*
 * rules/all.h -- every rule's file, included by rules.c and kernels.c once
 * per mode (see etk_internal.h).  Each rule here is also in ETK_RULE_LIST
 * (etakit.h); a rule missing from either list does not compile.
 */
#include "sgd.h"
#include "adam.h"
#include "rmsprop.h"
#include "adagrad.h"
#include "lion.h"
#include "nadam.h"
#include "radam.h"
#include "adamax.h"
#include "adan.h"
#include "adopt.h"
#include "ademamix.h"
#include "lamb.h"
#include "lars.h"
#include "adadelta.h"
#include "asgd.h"
#include "rprop.h"
#include "adafactor.h"
#include "muon.h"
#include "prodigy.h"
#include "dadapt_adam.h"
#include "dadapt_sgd.h"
#include "dadapt_adagrad.h"
#include "probe.h"
